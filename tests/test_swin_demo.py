"""The Swin demo (configs/demo/seg_demo_swin.py) and the tools around a
DyTSwinTransformer: its mmseg-format checkpoint loads fully (and an
unconverted one is refused), a training step of the demo model, adapter-only
checkpoints that reload and merge, and dispatch maps of all stages on the
first stage's token grid."""
import json
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config

from helpers import config_path, load_tool, make_seg_data, save_model
from mmdyt.models import DyTSwinTransformer
from mmdyt.models.backbones.frozen_backbone import (adapter_only_entries,
                                                    is_dyt_param)
from mmdyt.models.dispatch_record import predict_with_dispatch
from mmdyt_tools.twins import randomize_adapters


@pytest.fixture(scope='module')
def demo_swin(tmp_path_factory):
    """A random demo Swin (mmseg's SwinTransformer, saved in its format)
    and the Swin demo config pointing at it."""
    from demo_swin import build_demo_swin
    root = tmp_path_factory.mktemp('demo_swin')
    torch.manual_seed(0)
    reference = build_demo_swin()
    reference.eval()  # (mmseg's Swin.train returns None)
    path = str(root / 'swin.pth')
    torch.save(reference.state_dict(), path)
    cfg = Config.fromfile(config_path('demo/seg_demo_swin.py'))
    cfg.model.backbone.init_cfg.checkpoint = path
    return reference, cfg, path


def build_backbone(cfg: Config, **kwargs) -> DyTSwinTransformer:
    """The config's backbone, with ``kwargs`` changed."""
    args = {k: v for k, v in cfg.model.backbone.items() if k != 'type'}
    return DyTSwinTransformer(**{**args, **kwargs})


def test_demo_config_loads_the_demo_swin_and_trains_a_step(demo_swin):
    """The config's backbone holds every weight of the demo checkpoint
    (fresh adapters: mmseg's Swin outputs), and the demo segmentor trains
    (rate loss) and predicts on 96x96 images."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    from helpers import train_and_test_step
    from mmdyt.registry import build_model
    reference, cfg, _ = demo_swin
    backbone = build_backbone(cfg)
    backbone.init_weights()
    for name, value in reference.state_dict().items():
        assert torch.equal(backbone.state_dict()[name], value), name
    images = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        backbone.eval()
        outs, _ = backbone.forward_with_masks(images, complete=True)
        for out, expected in zip(outs, reference(images)):
            torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)

    # mmseg's registry whatever scope an earlier test left current
    model = build_model(dict(cfg.model, _scope_=cfg.default_scope))
    model.init_weights()
    samples = []
    for _ in range(2):  # the heads' BatchNorms need a batch
        sample = SegDataSample(metainfo=dict(img_shape=(96, 96),
                                             ori_shape=(96, 96),
                                             pad_shape=(96, 96)))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, 5, (1, 96, 96)))
        samples.append(sample)
    data = dict(inputs=[torch.randint(0, 255, (3, 96, 96),
                                      dtype=torch.uint8) for _ in range(2)],
                data_samples=samples)
    log_vars, predictions = train_and_test_step(model, data)
    assert {'loss_rate', 'act_rate', 'decode.loss_ce'} <= set(log_vars)
    assert predictions[0].pred_sem_seg.shape == (96, 96)
    assert 0 < predictions[0].metainfo['act_rate'] < 1


def test_unconverted_swin_checkpoint_is_refused(demo_swin, tmp_path):
    """mmseg loads Swin checkpoints with strict=False; an official-layout
    one would leave the Swin random. It is an error naming the converter."""
    reference, cfg, _ = demo_swin
    official = {k.replace('stages.', 'layers.'): v
                for k, v in reference.state_dict().items()}
    path = str(tmp_path / 'official.pth')
    torch.save(dict(model=official), path)
    backbone = build_backbone(cfg, init_cfg=dict(type='Pretrained',
                                                 checkpoint=path))
    with pytest.raises(ValueError, match='swin2mmseg'):
        backbone.init_weights()


def test_adapter_only_checkpoint_reloads_and_merges(demo_swin, tmp_path):
    """save_trainable_only: no frozen Swin weight saved; a model loading it
    needs its base first, then computes what the saved one did; the merge tool
    restores the base's weights beside the trained ones."""
    _, cfg, base = demo_swin
    trained = build_backbone(cfg, save_trainable_only=True)
    trained.init_weights()
    randomize_adapters(trained)
    state_dict = trained.state_dict()
    frozen = [n for n, p in trained.named_parameters() if not p.requires_grad]
    assert frozen and not set(frozen) & set(state_dict)
    assert all(is_dyt_param(k) or 'relative_position_index' in k
               for k in state_dict)  # (constant buffers are kept)
    meta = adapter_only_entries(state_dict)['']
    assert meta['base_arch'] == 'Swin' and meta['base_checkpoint'] == base
    adapters = str(tmp_path / 'adapters.pth')
    torch.save(state_dict, adapters)

    fresh = build_backbone(cfg, save_trainable_only=True)
    with pytest.raises(ValueError, match='does not hold them yet'):
        fresh.load_state_dict(torch.load(adapters))
    assert fresh.load_pretrained()
    fresh.load_state_dict(torch.load(adapters))
    images = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        fresh.eval()
        trained.eval()
        for got, expected in zip(fresh(images), trained(images)):
            assert torch.equal(got, expected)

    merged = str(tmp_path / 'full.pth')
    load_tool('model_converters/merge_adapter_checkpoint.py') \
        .merge_adapter_checkpoint(adapters, merged)
    full = torch.load(merged)
    base_weights = torch.load(base)
    assert set(full) == set(base_weights) | set(state_dict)
    for key, value in base_weights.items():
        assert torch.equal(full[key], value), key


def test_dispatch_masks_of_all_stages_on_the_first_grid(demo_swin):
    """An odd size (partial patches and windows padded): every stage's
    decisions repeated over the first-stage tokens they cover; the rate is
    that of the masks as they are."""
    from mmdyt.models.layers.dispatcher import mean_rate
    from mmseg.structures import SegDataSample
    _, cfg, _ = demo_swin
    backbone = build_backbone(cfg)
    backbone.eval()
    images = torch.randn(1, 3, 97, 131)

    def predict():
        with torch.no_grad():
            backbone(images)
        return [SegDataSample()]

    sample, = predict_with_dispatch(backbone, predict, return_masks=True)
    grid = sample.metainfo['dispatch_grid']
    assert grid == (25, 33)  # ceil(97 / 4), ceil(131 / 4)
    masks = sample.dispatch_masks
    assert masks.shape == (1, 8, 25 * 33)
    assert backbone.dispatch_site_strides == [1, 1, 2, 2, 4, 4, 8, 8]
    for site, stage_mask in enumerate(backbone.dispatch_masks):
        stride = backbone.dispatch_site_strides[site]
        height, width = -(-25 // stride), -(-33 // stride)
        cells = stage_mask.reshape(height, width).bool()
        expected = torch.kron(cells.int(), torch.ones(stride, stride,
                                                      dtype=torch.int))
        assert torch.equal(masks[0, site].reshape(25, 33),
                           expected[:25, :33].bool())
    assert sample.metainfo['act_rate'] == pytest.approx(
        float(mean_rate(backbone.dispatch_masks)))


def test_visualize_dispatch_draws_the_swin_demo(demo_swin, tmp_path):
    """tools/analysis_tools/visualize_dispatch.py on the Swin demo config:
    a map per block (8) and the count panel, at the image's size."""
    from mmdyt_tools.dispatch_plots import grid_size
    from mmdyt_tools.inputs import init_task_model
    _, cfg, _ = demo_swin
    config = str(tmp_path / 'seg_demo_swin.py')
    cfg.dump(config)
    checkpoint = save_model(init_task_model(cfg), str(tmp_path / 'm.pth'))
    image = osp.join(make_seg_data(str(tmp_path / 'data'), 1, size=96),
                     'images', 'validation', '0.jpg')
    out = str(tmp_path / 'vis')
    load_tool('analysis_tools/visualize_dispatch.py').main(
        [config, checkpoint, image, '--out', out, '--cols', '3'])
    import cv2
    canvas = cv2.imread(osp.join(out, '0_dispatch.png'))
    assert canvas.shape[:2] == grid_size((96, 96), 9, 3)
    with open(osp.join(out, '0_rates.json')) as f:
        rates = json.load(f)
    assert rates['input_shape'] == [3, 96, 96]
    assert len(rates['rates']) == 8 and all(0 <= r <= 1
                                            for r in rates['rates'])
    assert 0 < rates['rates'][0] < 1  # 576 first-stage tokens


def test_demo_pretrainer_writes_an_mmseg_swin_checkpoint(tmp_path):
    """tools/demo/demo_swin.py: patch classification at the four strides,
    saved in mmseg's format (the names the demo config loads)."""
    from demo_swin import DEMO_SWIN_STRIDES, build_demo_swin, \
        pretrain_demo_swin
    from demo_vit import _batch
    batch = _batch(np.random.RandomState(0), 2, DEMO_SWIN_STRIDES)
    assert [t.shape for t in batch['targets']] == [
        (2, 24 * 24), (2, 12 * 12), (2, 6 * 6), (2, 3 * 3)]
    out = str(tmp_path / 'swin.pth')
    stats = pretrain_demo_swin(out, steps=2, batch_size=2,
                               log=lambda msg: None)
    assert 0 < stats['loss'] < 10 and 0 <= stats['patch_acc'] <= 1
    weights = torch.load(out)
    expected = build_demo_swin().state_dict()
    assert {k: v.shape for k, v in weights.items()} == {
        k: v.shape for k, v in expected.items()}
