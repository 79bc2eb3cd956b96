"""The segmentation demo config end to end: train, resume, test."""
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from conftest import REPO_ROOT, seg_demo_env

CONFIG = osp.join(REPO_ROOT, 'configs/demo/seg_demo.py')


@pytest.fixture(scope='module')
def demo_env(tmp_path_factory):
    """A small generated dataset and a random demo ViT checkpoint."""
    root = tmp_path_factory.mktemp('demo')
    options = {
        **seg_demo_env(root, training=8, validation=4),
        'data_root': str(root / 'seg'),
        'train_dataloader.batch_size': 2,
        'default_hooks.checkpoint.interval': 2,
        'default_hooks.logger.interval': 1,
        'train_cfg.val_interval': 100,
    }
    return root, options


def run_tool(tool, *args, options):
    cli_options = [f'{k}={v}' for k, v in options.items()]
    result = subprocess.run(
        [sys.executable, osp.join(REPO_ROOT, 'tools', tool), *args,
         '--cfg-options', *cli_options],
        capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[
        -3000:]
    return result.stderr + result.stdout  # the summary is printed last


def load(path):
    return torch.load(path, map_location='cpu')


def test_resume_continues_where_the_run_stopped(demo_env, tmp_path):
    root, options = demo_env
    full, parts = tmp_path / 'full', tmp_path / 'parts'
    run_tool('train.py', CONFIG, '--work-dir', str(full),
             options={**options, 'train_cfg.max_iters': 4})
    # "interrupted" after 2 iterations ...
    run_tool('train.py', CONFIG, '--work-dir', str(parts),
             options={**options, 'train_cfg.max_iters': 2})
    reference, stopped = load(full / 'iter_2.pth'), load(parts / 'iter_2.pth')
    for key, value in reference['state_dict'].items():
        torch.testing.assert_close(stopped['state_dict'][key], value)

    # ... resumed: the runner starts from iteration 2 with the state the
    # uninterrupted run had there: optimizer moments, dispatchers, adapters
    cfg = Config.fromfile(CONFIG)
    cfg.merge_from_dict({**options, 'train_cfg.max_iters': 4})
    cfg.work_dir, cfg.resume = str(parts), True
    runner = Runner.from_cfg(cfg)
    runner._train_loop = runner.build_train_loop(runner._train_loop)
    runner.optim_wrapper = runner.build_optim_wrapper(runner.optim_wrapper)
    runner.load_or_resume()
    assert runner.iter == 2
    state = runner.model.state_dict()
    dispatchers = [k for k in state if '_dispatcher.' in k]
    assert dispatchers
    for key in dispatchers + [k for k in state if '_adapter.' in k]:
        torch.testing.assert_close(state[key], reference['state_dict'][key])
    optimizer = runner.optim_wrapper.state_dict()['state']
    assert optimizer
    for index, moments in reference['optimizer']['state'].items():
        for name, value in moments.items():
            torch.testing.assert_close(optimizer[index][name], value)

    log = run_tool('train.py', CONFIG, '--work-dir', str(parts), '--resume',
                   options={**options, 'train_cfg.max_iters': 4})
    assert 'resumed epoch: 0, iter: 2' in log
    assert 'Iter(train) [3/4]' in log and 'Iter(train) [1/4]' not in log
    # ... and ends where the uninterrupted run ended: same data, same Gumbel
    # noise and dropout (IterSeedHook), so the same weights and moments
    resumed, reference = load(parts / 'iter_4.pth'), load(full / 'iter_4.pth')
    for key, value in reference['state_dict'].items():
        torch.testing.assert_close(resumed['state_dict'][key], value,
                                   rtol=0, atol=0, msg=key)
    for index, moments in reference['optimizer']['state'].items():
        for name, value in moments.items():
            torch.testing.assert_close(
                resumed['optimizer']['state'][index][name], value, rtol=0,
                atol=0)


def parse_metrics(out: str) -> dict:
    """The metrics of tools/test.py's summary."""
    summary = out[out.index('=== test results ==='):].splitlines()[1:]
    return {
        name: float(value)
        for name, value in (line.split(': ', 1) for line in summary
                            if ': ' in line and ' ' not in line.split(':')[0])
    }


def test_tools_test_reports_miou_rate_and_flops(demo_env, tmp_path):
    root, options = demo_env
    run_tool('train.py', CONFIG, '--work-dir', str(tmp_path),
             options={**options, 'train_cfg.max_iters': 2})
    checkpoint = str(tmp_path / 'iter_2.pth')
    metrics = parse_metrics(
        run_tool('test.py', CONFIG, checkpoint, '--work-dir',
                 str(tmp_path / 'test'), options=options))
    assert {'mIoU', 'aAcc', 'act_rate', 'backbone_gflops'} <= set(metrics)
    assert 0 <= metrics['mIoU'] <= 100
    assert 0 < metrics['act_rate'] < 1
    assert metrics['backbone_gflops'] < metrics['backbone_gflops_complete']
    # a higher threshold skips more, without retraining
    stricter = parse_metrics(
        run_tool('test.py', CONFIG, checkpoint, '--dispatch-threshold',
                 '0.6', '--work-dir', str(tmp_path / 'test6'),
                 options=options))
    assert stricter['act_rate'] < metrics['act_rate']
    assert stricter['backbone_gflops'] < metrics['backbone_gflops']
