"""The libraries' own inference APIs on mmdyt's configs: mmseg's
MMSegInferencer, init_model / inference_model and show_result_pyplot;
mmaction2's init_recognizer / inference_recognizer and MMAction2Inferencer.
Every prediction carries what DyT did for that input."""
import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config

from helpers import (TINY, config_path, make_video, save_model,
                     shrink_seg_recipe)
from mmdyt.models.layers.dispatcher import mean_rate


def image(tmp_path, size=96):
    path = str(tmp_path / 'image.jpg')
    rng = np.random.RandomState(0)
    cv2.imwrite(path, rng.randint(0, 255, (size, size, 3), dtype=np.uint8))
    return path


def seg_config(name, **options):
    cfg = Config.fromfile(config_path(name))
    cfg.model.backbone.init_cfg = None  # random weights: nothing to read
    if cfg.model.backbone.arch == 'base':
        shrink_seg_recipe(cfg, size=256)  # same pipeline, a tiny model
    cfg.merge_from_dict(options)
    return cfg


def check_dispatch_record(sample, backbone, rows, masks=True):
    rate = sample.metainfo['act_rate']
    assert 0 < rate < 1  # untrained dispatchers skip about half
    if masks:
        recorded = sample.dispatch_masks
        assert recorded.dtype == torch.bool
        grid = sample.metainfo['dispatch_grid']
        assert recorded.shape == (rows, len(backbone.dispatch_sites),
                                  grid[0] * grid[1])
        assert rate == pytest.approx(float(mean_rate(
            list(recorded.float().transpose(0, 1)))))


@pytest.mark.parametrize('name', ['demo/seg_demo.py', 'ade20k/dyt_vitb.py'])
def test_mmseg_inferencer(tmp_path, name):
    from mmseg.apis import MMSegInferencer
    cfg = seg_config(name, **{'model.test_cfg.return_dispatch_masks': True})
    inferencer = MMSegInferencer(model=cfg, weights=None, device='cpu')
    sample = inferencer(image(tmp_path), return_datasamples=True)
    assert sample.pred_sem_seg.shape == (96, 96)
    test_cfg = inferencer.model.test_cfg
    rows = 1  # 'whole': one forward
    if test_cfg.mode == 'slide':  # one forward per crop, as mmseg slides
        height, width = sample.metainfo['img_shape']
        (crop_h, crop_w), (stride_h, stride_w) = (test_cfg.crop_size,
                                                  test_cfg.stride)
        rows = ((max(height - crop_h + stride_h - 1, 0) // stride_h + 1) *
                (max(width - crop_w + stride_w - 1, 0) // stride_w + 1))
    check_dispatch_record(sample, inferencer.model.backbone, rows=rows)


def test_mmseg_init_inference_and_show(tmp_path):
    """A trained-like checkpoint through init_model, inference_model and
    show_result_pyplot; the rate without masks by default."""
    from mmseg.apis import inference_model, init_model, show_result_pyplot
    cfg = seg_config('demo/seg_demo.py')
    model = init_model(cfg, device='cpu')
    checkpoint = save_model(model, str(tmp_path / 'model.pth'))
    model = init_model(cfg, checkpoint, device='cpu')
    path = image(tmp_path)
    sample = inference_model(model, path)
    check_dispatch_record(sample, model.backbone, rows=1, masks=False)
    assert 'dispatch_masks' not in sample
    model.return_dispatch_masks = True  # on request, for one's own image
    sample = inference_model(model, path)
    check_dispatch_record(sample, model.backbone, rows=1)
    drawn = show_result_pyplot(model, path, sample, show=False,
                               out_file=str(tmp_path / 'shown.png'))
    assert drawn.shape == (96, 96, 3)


def video_config(name):
    cfg = Config.fromfile(config_path(name))
    cfg.model.backbone.update(init_cfg=None, arch=dict(TINY), img_size=32)
    cfg.model.cls_head.update(in_channels=TINY['embed_dims'], num_heads=2)
    return cfg


@pytest.mark.parametrize('name, views, frames', [
    ('demo/video_demo.py', 2, 4),
    ('kinetics400/dyt_vitb_8x224.py', 3, 8),
])
def test_init_and_inference_recognizer(tmp_path, name, views, frames):
    from mmaction.apis import inference_recognizer, init_recognizer
    cfg = video_config(name)
    video = make_video(str(tmp_path / 'clip.mp4'), num_frames=20, size=64)
    model = init_recognizer(cfg, device='cpu')
    model.return_dispatch_masks = True
    sample = inference_recognizer(model, video)
    assert sample.pred_score.shape == (cfg.model.cls_head.num_classes, )
    # every view and every frame of the clip counts
    check_dispatch_record(sample, model.backbone, rows=views * frames)


def test_mmaction2_inferencer(tmp_path):
    from mmaction.apis.inferencers import MMAction2Inferencer
    cfg = video_config('demo/video_demo.py')
    video = make_video(str(tmp_path / 'clip.mp4'), num_frames=20, size=64)
    inferencer = MMAction2Inferencer(rec=cfg, device='cpu')
    result = inferencer(video)['predictions'][0]
    scores = result['rec_scores'][0]
    assert len(scores) == 4
    # its data samples (the recognition inferencer inside) carry the rate
    sample = inferencer.actionrecog_inferencer(
        video, return_datasamples=True)['predictions'][0]
    torch.testing.assert_close(sample.pred_score, torch.tensor(scores))
    assert 0 < sample.metainfo['act_rate'] < 1


def test_mmseg_inferencer_under_bfloat16_autocast(tmp_path):
    """The inferencer runs DyT in bfloat16 when the call is wrapped in
    torch.autocast (what the mixed-precision section of
    docs/en/user_guides/train_test.md shows): the MLPs compute in bfloat16,
    the dispatcher scores in float32, and predictions and rate stay close to
    float32's."""
    from mmseg.apis import MMSegInferencer
    torch.manual_seed(0)
    inferencer = MMSegInferencer(model=seg_config('demo/seg_demo.py'),
                                 weights=None, device='cpu')
    path = image(tmp_path)
    dtypes = {}
    block = inferencer.model.backbone.blocks[0]

    def record(name):
        def hook(module, args, out):
            dtypes.setdefault(name, out.dtype)
        return hook

    hooks = [module.register_forward_hook(record(name)) for name, module in (
        ('mlp', block.mlp.fc1), ('scores', block.mlp_dispatcher))]
    fp32 = inferencer(path, return_datasamples=True)
    assert dtypes == {'mlp': torch.float32, 'scores': torch.float32}
    dtypes.clear()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        bf16 = inferencer(path, return_datasamples=True)
    for hook in hooks:
        hook.remove()
    assert dtypes == {'mlp': torch.bfloat16, 'scores': torch.float32}
    agree = (bf16.pred_sem_seg.data == fp32.pred_sem_seg.data).float().mean()
    assert agree > 0.95
    assert bf16.metainfo['act_rate'] == pytest.approx(
        fp32.metainfo['act_rate'], abs=0.05)
