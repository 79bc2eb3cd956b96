"""The detection demo config end to end with the tools: train, test, the
COCO metrics against mmdet's own API, the untrained baseline."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from helpers import REPO_ROOT, det_demo_env, load_tool, run_tool_here

CONFIG = osp.join(REPO_ROOT, 'configs/demo/det_demo.py')


@pytest.fixture(scope='module')
def demo_env(tmp_path_factory):
    """A small generated COCO-format dataset and a random demo ViT."""
    root = tmp_path_factory.mktemp('det_demo')
    options = {
        **det_demo_env(root, train=4, val=3),
        'train_dataloader.batch_size': 2,
        'default_hooks.checkpoint.interval': 2,
        'default_hooks.logger.interval': 1,
        'train_cfg.val_interval': 100,
    }
    return root, options


def independent_coco_metrics(model, cfg) -> dict:
    """COCO bbox/segm mAP of ``model`` on the demo's test images, predicted
    one by one with mmdet's ``inference_detector`` and scored by a fresh
    ``CocoMetric``."""
    from mmdet.apis import inference_detector
    from mmdet.registry import DATASETS, METRICS
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    metric = METRICS.build(cfg.test_evaluator)
    metric.dataset_meta = dataset.metainfo
    for index in range(len(dataset)):
        info = dataset.get_data_info(index)
        prediction = inference_detector(model, info['img_path'])
        result = prediction.to_dict()
        result['img_id'] = info['img_id']
        metric.process({}, [result])
    return metric.evaluate(len(dataset))


def test_demo_trains_and_tests_with_the_tools(demo_env, tmp_path):
    from mmdet.apis import init_detector
    root, options = demo_env
    run_tool_here('train.py', CONFIG, '--work-dir', str(tmp_path),
                  options={**options, 'train_cfg.max_iters': 2})
    checkpoint = str(tmp_path / 'iter_2.pth')
    metrics = run_tool_here('test.py', CONFIG, checkpoint, '--work-dir',
                            str(tmp_path / 'test'), options=options)
    assert {'coco/bbox_mAP', 'coco/segm_mAP', 'act_rate',
            'backbone_gflops'} <= set(metrics)
    assert metrics['backbone_gflops'] < metrics['backbone_gflops_complete']
    assert 0 < metrics['act_rate'] < 1
    # the test loop's COCO metrics are what mmdet's own API and metric give
    cfg = Config.fromfile(CONFIG)
    cfg.merge_from_dict(options)
    model = init_detector(cfg, checkpoint, device='cpu')
    expected = independent_coco_metrics(model, cfg)
    for name in ('bbox_mAP', 'bbox_mAP_50', 'segm_mAP', 'segm_mAP_50'):
        assert metrics[f'coco/{name}'] == pytest.approx(
            expected[f'coco/{name}'], abs=1e-3)


def test_untrained_baseline_changes_no_weight(demo_env, tmp_path):
    """run_demo.py's baseline (one step at lr 0, then the evaluation)
    evaluates the model as it was before training."""
    import argparse

    from mmengine.config import DictAction
    from mmengine.hooks import Hook
    from mmengine.runner import Runner
    root, options = demo_env
    run_demo = load_tool('demo/run_demo.py')
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    baseline = parser.parse_args(
        ['--cfg-options', *run_demo.BASELINE_OPTIONS]).cfg_options
    cfg = Config.fromfile(CONFIG)
    cfg.merge_from_dict(options)
    cfg.merge_from_dict(baseline)
    cfg.work_dir = str(tmp_path)

    class Snapshot(Hook):
        def before_train_iter(self, runner, batch_idx, data_batch=None):
            self.state = {k: v.clone()
                          for k, v in runner.model.state_dict().items()}

    snapshot = Snapshot()
    runner = Runner.from_cfg(cfg)
    runner.register_hook(snapshot)
    runner.train()
    after = runner.model.state_dict()
    assert runner.iter == 1 and after.keys() == snapshot.state.keys()
    for name, value in snapshot.state.items():
        assert torch.equal(after[name], value), name


def test_val_summary_reads_the_last_validation_line():
    run_demo = load_tool('demo/run_demo.py')
    output = (
        'x - Iter(val) [1/1]    coco/bbox_mAP: 0.1000  act_rate: 0.3\n'
        'y - Iter(val) [7/7]    coco/bbox_mAP: 0.5660  coco/bbox_mAP_l: '
        '-1.0000  act_rate: 0.4936  time: 0.4952\n')
    assert run_demo.val_summary(output) == {
        'coco/bbox_mAP': 0.566, 'coco/bbox_mAP_l': -1.0, 'act_rate': 0.4936,
        'time': 0.4952}
    table = run_demo.results_table(
        {'coco/bbox_mAP': 0.566, 'act_rate': 0.49},
        ['coco/bbox_mAP'], baseline={'coco/bbox_mAP': 0.001})
    assert '0.566 (untrained: 0.001)' in table
