"""Runs that survive a kill: a training run killed with SIGKILL (at a random
iteration, or while a checkpoint is written) and restarted with ``--resume``
ends with the uninterrupted run's weights, bit for bit."""
import os
import os.path as osp
import random

import pytest
import torch
from mmengine.config import Config

from helpers import (config_path, run_tool, run_tool_here, seg_demo_env,
                     tensors_equal)

CONFIG = config_path('demo/seg_demo.py')
ITERS = 6


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    """Data, options and the uninterrupted run's final checkpoint."""
    root = tmp_path_factory.mktemp('kill')
    options = {
        **seg_demo_env(root, training=4, validation=2),
        'train_dataloader.batch_size': 2,
        'train_cfg.max_iters': ITERS,
        'train_cfg.val_interval': 100,
        'default_hooks.checkpoint.interval': 2,
    }
    reference = root / 'reference'
    run_tool_here('train.py', CONFIG, '--work-dir', str(reference),
                  '--no-validate', options=options)
    return root, options, torch.load(reference / f'iter_{ITERS}.pth')


def killed_run(root, options, work_dir, **kill):
    """tools/train.py in its own process (SIGKILL ends it), with a
    KillHook; returns the finished process."""
    cfg = Config.fromfile(CONFIG)
    cfg.custom_imports = dict(imports=['mmdyt', 'kill_helpers'],
                              allow_failed_imports=False)
    cfg.custom_hooks = list(cfg.custom_hooks) + [dict(type='KillHook',
                                                      **kill)]
    config = str(root / f'kill_{osp.basename(work_dir)}.py')
    cfg.dump(config)
    return run_tool(
        'train.py', config, '--work-dir', str(work_dir), '--no-validate',
        options=options, check=False,
        # the thread count of this process, which trains the reference and
        # the resumed runs: the same float summation order
        env=dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()),
                 PYTHONPATH=osp.dirname(osp.abspath(__file__))))


def resume(work_dir, options):
    run_tool_here('train.py', CONFIG, '--work-dir', str(work_dir),
                  '--no-validate', '--resume', options=options)
    return torch.load(work_dir / f'iter_{ITERS}.pth')


def test_resume_after_a_kill_at_a_random_iteration(demo, tmp_path):
    root, options, reference = demo
    iteration = random.Random().randint(3, ITERS - 1)
    work = tmp_path / 'killed'
    result = killed_run(root, options, work, iteration=iteration)
    assert result.returncode == -9, (iteration, result.output[-3000:])
    assert not (work / f'iter_{ITERS}.pth').exists()
    final = resume(work, options)
    tensors_equal(final['state_dict'], reference['state_dict'])
    tensors_equal(final['optimizer'], reference['optimizer'])


def test_resume_after_a_kill_while_a_checkpoint_is_written(demo, tmp_path):
    root, options, reference = demo
    work = tmp_path / 'killed'
    result = killed_run(root, options, work, iteration=4, during_save=True)
    assert result.returncode == -9, result.output[-3000:]
    # the torn file is there, but last_checkpoint still names iter_2
    assert (work / 'iter_4.pth').exists()
    assert (work / 'last_checkpoint').read_text().endswith('iter_2.pth')
    final = resume(work, options)
    tensors_equal(final['state_dict'], reference['state_dict'])
    tensors_equal(final['optimizer'], reference['optimizer'])


def test_a_damaged_last_checkpoint_names_the_previous_good_one(
        demo, tmp_path):
    root, options, _ = demo
    work = tmp_path / 'work'
    run_tool_here('train.py', CONFIG, '--work-dir', str(work),
                  '--no-validate',
                  options={**options, 'train_cfg.max_iters': 4})
    last = work / 'iter_4.pth'
    last.write_bytes(last.read_bytes()[:1000])  # e.g. a disk that filled up
    with pytest.raises(ValueError) as error:
        run_tool_here('train.py', CONFIG, '--work-dir', str(work),
                      '--no-validate', '--resume', options=options)
    message = str(error.value)
    assert str(last) in message and 'is corrupt' in message
    assert f'--resume {work / "iter_2.pth"}' in message
