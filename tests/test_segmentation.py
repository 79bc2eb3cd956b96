"""Segmentation on mmseg: config swaps, the ADE20K recipes, demo, resume."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample

from helpers import REPO_ROOT, shrink_seg_recipe, train_and_test_step


def build_segmentor(cfg: Config, size=None):
    """Build ``cfg.model`` on the CPU; ``size`` overrides the training
    input size the data preprocessor pads to (512 in the recipes)."""
    init_default_scope('mmseg')
    from mmseg.registry import MODELS
    cfg.model.backbone.init_cfg = None  # no weights to download
    if size is not None:
        cfg.model.data_preprocessor.size = size
    return revert_sync_batchnorm(MODELS.build(cfg.model))


def seg_batch(size, num_classes, batch=2):
    inputs = [torch.randint(0, 256, (3, *size), dtype=torch.uint8)
              for _ in range(batch)]
    samples = []
    for _ in range(batch):
        sample = SegDataSample(
            gt_sem_seg=PixelData(
                data=torch.randint(0, num_classes, (1, *size))))
        sample.set_metainfo(
            dict(img_shape=size, ori_shape=size, pad_shape=size))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def test_swap_into_mmseg_vit_config(tmp_path):
    """mmseg's own ViT-B UperNet config, made DyT in a few lines."""
    config = tmp_path / 'dyt_swap.py'
    config.write_text("""
_base_ = 'mmseg::vit/vit_vit-b16_mln_upernet_8xb2-160k_ade20k-512x512.py'
custom_imports = dict(imports=['mmdyt'])
model = dict(
    type='DyTEncoderDecoder',
    pretrained=None,
    backbone=dict(_delete_=True, type='DyTViT', arch='base', img_size=512,
                  out_indices=(2, 5, 8, 11)))
""")
    cfg = Config.fromfile(str(config))
    assert cfg.model.neck.type == 'MultiLevelNeck'  # mmseg's own neck stays
    model = build_segmentor(cfg, size=(64, 64))
    trainable = {n for n, p in model.backbone.named_parameters()
                 if p.requires_grad}
    assert trainable and all('_adapter.' in n or '_dispatcher.' in n
                             for n in trainable)
    log_vars, predictions = train_and_test_step(
        model, seg_batch((64, 64), num_classes=150))
    assert {'decode.loss_ce', 'aux.loss_ce', 'loss_rate'} <= set(log_vars)
    assert 0 < log_vars['act_rate'] < 1  # untrained: some tokens skipped
    assert predictions[0].pred_sem_seg.shape == (64, 64)


def test_ade20k_recipe_is_vit_b_upernet_at_512():
    """What the recipe is (its wiring runs, tiny, below)."""
    cfg = Config.fromfile(osp.join(REPO_ROOT, 'configs/ade20k/dyt_vitb.py'))
    backbone = cfg.model.backbone
    assert (backbone.arch, backbone.img_size, backbone.dispatch) == (
        'base', (512, 512), 'mlp')
    assert backbone.out_indices == (3, 5, 7, 11)
    assert cfg.model.decode_head.type == 'UPerHead'
    assert cfg.model.decode_head.channels == 768
    assert cfg.model.test_cfg.mode == 'slide'
    assert cfg.model.dyt_loss.target_rate == 0.5


def test_ade20k_recipe_runs_on_cpu():
    """The recipe's own model and test mode (sliding windows), tiny:
    training crops of the backbone's size, a larger test image in 2 x 2
    windows."""
    cfg = Config.fromfile(osp.join(REPO_ROOT, 'configs/ade20k/dyt_vitb.py'))
    shrink_seg_recipe(cfg, size=64)
    model = build_segmentor(cfg)
    assert all(b.rel_pos_bias is not None for b in model.backbone.blocks)
    log_vars, predictions = train_and_test_step(
        model, seg_batch((64, 64), num_classes=150),
        seg_batch((96, 96), num_classes=150))
    assert {'decode.loss_ce', 'aux.loss_ce', 'loss_rate'} <= set(log_vars)
    assert 'loss_distill' not in log_vars  # the paper does not distil here
    assert all(torch.isfinite(torch.as_tensor(v)) for v in log_vars.values())
    assert [p.pred_sem_seg.shape for p in predictions] == [(96, 96)] * 2
    assert predictions[0].seg_logits.data.shape == (150, 96, 96)


def test_ade20k_distill_recipe_trains_on_cpu():
    cfg = Config.fromfile(
        osp.join(REPO_ROOT, 'configs/ade20k/dyt_vitb_distill.py'))
    assert cfg.model.dyt_loss.distill
    shrink_seg_recipe(cfg, size=64)
    model = build_segmentor(cfg).train()
    # the test path is that of dyt_vitb.py: one training iteration here
    data = model.data_preprocessor(
        seg_batch((64, 64), num_classes=150), training=True)
    losses = model.loss(**data)
    assert {'decode.loss_ce', 'loss_rate', 'loss_distill',
            'complete.decode.loss_ce'} <= set(losses)
    assert losses['loss_distill'] > 0  # skipping changes the logits
    total = sum(v for k, v in losses.items() if 'loss' in k)
    total.backward()
    assert all(p.grad is not None for n, p in model.named_parameters()
               if p.requires_grad and '_dispatcher.' in n)


def test_rate_loss_uses_the_dynamic_masks_whatever_the_teacher_does():
    """With distillation the complete (teacher) pass runs after the dynamic
    one; the rate loss must still see the dynamic masks, not the teacher's
    all-ones masks (the teacher pass used to overwrite them)."""
    cfg = Config.fromfile(
        osp.join(REPO_ROOT, 'configs/ade20k/dyt_vitb_distill.py'))
    shrink_seg_recipe(cfg, size=64)
    model = build_segmentor(cfg).train()
    data = model.data_preprocessor(
        seg_batch((64, 64), num_classes=150), training=True)
    student = []
    model.backbone.register_mask_hook(lambda masks, x: student.append(masks))
    losses = model.loss(**data)
    assert len(student) == 1  # the teacher pass reports no masks
    from mmdyt.models.layers.dispatcher import mean_rate
    rate = mean_rate(student[0])
    assert float(rate) < 1  # some tokens skipped
    assert losses['act_rate'] == pytest.approx(float(rate))
    assert float(losses['loss_rate']) == pytest.approx(
        2.0 * (float(rate) - 0.5)**2)


@pytest.mark.parametrize('config', [
    'configs/ade20k/dyt_vitb_moe.py', 'configs/ade20k/vitb_adapter.py',
    'configs/coco_stuff164k/dyt_vitb.py', 'configs/demo/seg_demo_adapter.py',
    'configs/ade20k/dyt_vitb_segmenter.py',
    'configs/ade20k/vitb_adapter_segmenter.py',
    'configs/demo/seg_demo_segmenter.py'
])
def test_other_recipes_build(config):
    cfg = Config.fromfile(osp.join(REPO_ROOT, config))
    if cfg.model.backbone.arch == 'base':
        shrink_seg_recipe(cfg, size=64)
    model = build_segmentor(cfg, size=(64, 64))
    log_vars, _ = train_and_test_step(model, seg_batch(
        (64, 64), num_classes=cfg.model.decode_head.num_classes))
    assert ('loss_rate' in log_vars) == (cfg.model.backbone.dispatch
                                         is not None)


def test_distillation_needs_dispatchers():
    cfg = Config.fromfile(
        osp.join(REPO_ROOT, 'configs/ade20k/vitb_adapter.py'))
    cfg.model.dyt_loss.distill = True
    with pytest.raises(ValueError, match='distill=True needs token'):
        build_segmentor(cfg)
