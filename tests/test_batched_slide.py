"""Batched sliding-window crops: the same predictions as mmseg's
crop-by-crop inference, and the same per-image dispatch record."""
import copy
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmseg.utils import stack_batch
from mmseg.structures import SegDataSample

from helpers import REPO_ROOT, shrink_seg_recipe
from mmdyt.models.segmentors.batched_slide import (AUTO_CROP_PIXELS,
                                                   check_crop_batch,
                                                   crop_windows,
                                                   resolve_crop_batch)
from test_segmentation import build_segmentor


def image_batch(model, sizes, seed=0):
    """Normalised test images of different sizes, padded into one batch
    (at the bottom and right, to multiples of 16, each sample's
    ``padding_size`` recorded) as mmseg's ``stack_batch`` does it. (mmseg's
    test-time data preprocessor takes same-size images only; the segmentor
    itself takes any padded batch.)"""
    generator = torch.Generator().manual_seed(seed)
    preprocessor = model.data_preprocessor
    inputs, samples = [], []
    for size in sizes:
        image = torch.randint(0, 256, (3, *size), generator=generator)
        inputs.append((image - preprocessor.mean) / preprocessor.std)
        samples.append(SegDataSample(
            metainfo=dict(img_shape=size, ori_shape=size)))
    inputs, samples = stack_batch(inputs, samples, size_divisor=16)
    return inputs, samples


@pytest.fixture(scope='module')
def segmentor():
    """The ADE20K recipe (sliding windows), tiny: 32 x 32 crops, stride
    21."""
    cfg = Config.fromfile(osp.join(REPO_ROOT, 'configs/ade20k/dyt_vitb.py'))
    shrink_seg_recipe(cfg, size=32)
    model = build_segmentor(cfg).eval()
    model.return_dispatch_masks = True
    return model


def predict(model, data, crop_batch):
    model.test_cfg.crop_batch = crop_batch
    forwards = []
    handle = model.backbone.register_mask_hook(
        lambda masks, x: forwards.append(x.shape[0]))
    inputs, samples = data
    try:
        with torch.no_grad():
            samples = model.predict(inputs, copy.deepcopy(samples))
    finally:
        handle.remove()
    return samples, forwards


# images of different sizes in one batch (padded to 32 x 80: 4 crops each),
# and one image alone that needs 2 x 3 crops
@pytest.mark.parametrize('sizes', [[(32, 48), (30, 80)], [(48, 64)]])
def test_batched_crops_equal_mmseg_crop_by_crop(segmentor, sizes):
    data = image_batch(segmentor, sizes)
    reference, ref_forwards = predict(segmentor, data, 1)
    num_crops = sum(ref_forwards)
    assert len(ref_forwards) == num_crops // len(sizes) in (4, 6)
    for crop_batch in (3, None):
        got, forwards = predict(segmentor, data, crop_batch)
        want = [crop_batch or num_crops] * (num_crops // (crop_batch or
                                                          num_crops))
        if num_crops % (crop_batch or num_crops):
            want.append(num_crops % crop_batch)
        assert forwards == want  # K crops per forward, the rest last
        for ref, sample, size in zip(reference, got, sizes):
            assert sample.seg_logits.data.shape == (150, *size)
            torch.testing.assert_close(sample.seg_logits.data,
                                       ref.seg_logits.data, rtol=0,
                                       atol=1e-5)
            assert torch.equal(sample.pred_sem_seg.data,
                               ref.pred_sem_seg.data)
            # the same per-image record of what DyT computed
            assert torch.equal(sample.dispatch_masks, ref.dispatch_masks)
            assert sample.act_rate == ref.act_rate
            assert 0 < sample.act_rate < 1


def test_a_batch_of_one_crop_takes_mmseg_path(segmentor):
    data = image_batch(segmentor, [(32, 32)])
    samples, forwards = predict(segmentor, data, None)
    assert forwards == [1]
    assert samples[0].seg_logits.data.shape == (150, 32, 32)


def test_crop_windows_are_mmseg_slide_windows():
    # mmseg's loop: rows of crops top to bottom, each left to right, the
    # last crop of a row or column flush with the image's edge
    assert crop_windows((32, 80), (32, 32), (21, 21)) == [
        (0, 32, 0, 32), (0, 32, 21, 53), (0, 32, 42, 74), (0, 32, 48, 80)]
    assert len(crop_windows((512, 2048), (512, 512), (341, 341))) == 6
    assert len(crop_windows((512, 683), (512, 512), (341, 341))) == 2
    assert crop_windows((20, 20), (32, 32), (21, 21)) == [(0, 20, 0, 20)]


def test_default_crop_batch_is_memory_bounded():
    assert resolve_crop_batch(None, 6, (512, 512)) == 6
    assert resolve_crop_batch(None, 20, (512, 512)) == \
        AUTO_CROP_PIXELS // (512 * 512) == 8
    assert resolve_crop_batch(None, 20, (1024, 1024)) == 2
    assert resolve_crop_batch(4, 3, (512, 512)) == 3
    assert resolve_crop_batch(1, 6, (512, 512)) == 1


@pytest.mark.parametrize('bad', [0, -2, 2.5, '4', True])
def test_bad_crop_batch_is_named(bad):
    with pytest.raises(ValueError, match='crop_batch must be a positive'):
        check_crop_batch(bad)


def test_bad_crop_batch_in_config_fails_at_build():
    cfg = Config.fromfile(osp.join(REPO_ROOT, 'configs/ade20k/dyt_vitb.py'))
    shrink_seg_recipe(cfg, size=32)
    cfg.model.test_cfg.crop_batch = 0
    with pytest.raises(ValueError, match='crop_batch must be a positive'):
        build_segmentor(cfg)
