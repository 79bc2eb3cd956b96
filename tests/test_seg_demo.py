"""The segmentation demo config end to end: train, resume, test."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from helpers import (REPO_ROOT, run_tool_here, seg_demo_env, tensors_equal,
                     work_dir_log)

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


def load(path):
    return torch.load(path, map_location='cpu')


def test_resume_continues_where_the_run_stopped(demo_env, tmp_path):
    root, options = demo_env
    full, parts = tmp_path / 'full', tmp_path / 'parts'
    run_tool_here('train.py', CONFIG, '--work-dir', str(full),
                  options={**options, 'train_cfg.max_iters': 4})
    # "interrupted" after 2 iterations ...
    run_tool_here('train.py', CONFIG, '--work-dir', str(parts),
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

    run_tool_here('train.py', CONFIG, '--work-dir', str(parts), '--resume',
                  options={**options, 'train_cfg.max_iters': 4})
    log = work_dir_log(parts)
    assert 'resumed epoch: 0, iter: 2' in log
    assert 'Iter(train) [3/4]' in log and 'Iter(train) [1/4]' not in log
    # ... and ends where the uninterrupted run ended: same data, same Gumbel
    # noise and dropout (IterSeedHook), so the same weights and moments
    resumed, reference = load(parts / 'iter_4.pth'), load(full / 'iter_4.pth')
    tensors_equal(resumed['state_dict'], reference['state_dict'])
    tensors_equal(resumed['optimizer'], reference['optimizer'])


def independent_miou(model, root) -> float:
    """mIoU of ``model`` on the demo test images, predicted one by one with
    mmseg's inference API and scored by mmseg's IoUMetric."""
    import glob

    import mmcv
    from mmseg.apis import inference_model
    from mmseg.evaluation import IoUMetric
    metric = IoUMetric(iou_metrics=['mIoU'])
    metric.dataset_meta = dict(classes=model.dataset_meta['classes'])
    for image in sorted(glob.glob(str(root / 'seg/images/validation/*'))):
        result = inference_model(model, image)
        label = image.replace('/images/', '/annotations/')[:-4] + '.png'
        gt = torch.from_numpy(mmcv.imread(label, flag='unchanged')).long()
        gt = torch.where(gt == 0, 255, gt - 1)  # reduce_zero_label
        metric.process([], [dict(pred_sem_seg=dict(data=result.pred_sem_seg
                                                   .data),
                                 gt_sem_seg=dict(data=gt[None]))])
    return metric.compute_metrics(metric.results)['mIoU']


def test_tools_test_reports_miou_rate_and_flops(demo_env, tmp_path):
    from mmseg.apis import init_model
    from mmdyt.models.flops import dyt_vit_flops
    root, options = demo_env
    run_tool_here('train.py', CONFIG, '--work-dir', str(tmp_path),
                  options={**options, 'train_cfg.max_iters': 2})
    checkpoint = str(tmp_path / 'iter_2.pth')
    metrics = run_tool_here('test.py', CONFIG, checkpoint, '--work-dir',
                            str(tmp_path / 'test'), options=options)
    assert {'mIoU', 'aAcc', 'act_rate', 'backbone_gflops'} <= set(metrics)
    # the test loop's mIoU is what mmseg's own API and metric give
    cfg = Config.fromfile(CONFIG)
    cfg.merge_from_dict(options)
    model = init_model(cfg, checkpoint, device='cpu')
    assert metrics['mIoU'] == pytest.approx(
        independent_miou(model, root), abs=0.01)
    # every demo block dispatches its MLP: FLOPs are linear in the mean rate
    rate = metrics['act_rate']
    assert 0 < rate < 1
    sites = len(model.backbone.dispatch_sites)
    expected = dyt_vit_flops(model.backbone, (96, 96), [rate] * sites)
    assert metrics['backbone_gflops'] == pytest.approx(
        expected.total / 1e9, abs=2e-4)
    assert metrics['backbone_gflops'] < metrics['backbone_gflops_complete']
    # a higher threshold skips more, without retraining
    stricter = run_tool_here('test.py', CONFIG, checkpoint,
                             '--dispatch-threshold', '0.6', '--work-dir',
                             str(tmp_path / 'test6'), options=options)
    assert stricter['act_rate'] < metrics['act_rate']
    assert stricter['backbone_gflops'] < metrics['backbone_gflops']
