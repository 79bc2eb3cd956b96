"""Detection on mmdet: the COCO recipes, the swap into mmdet's own Mask
R-CNN config, the DyT detector's losses and predictions, SimpleFPN."""
import os.path as osp

import numpy as np
import pytest
import torch
from mmdet.structures import DetDataSample
from mmdet.structures.mask import BitmapMasks
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData

from helpers import REPO_ROOT, det_demo_env, train_and_test_step
from mmdyt.models import LN2d, SimpleFPN

RECIPE = osp.join(REPO_ROOT, 'configs/coco/dyt_vitb_mask-rcnn_1x.py')
DEMO_CLASSES = ('circle', 'square', 'triangle', 'cross')


def build_detector(cfg: Config):
    init_default_scope('mmdet')
    from mmdet.registry import MODELS
    return MODELS.build(cfg.model)


def det_batch(size, num_classes, batch=2, seed=0):
    """Random images with two boxes (and box-shaped masks) each."""
    generator = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for _ in range(batch):
        inputs.append(torch.randint(0, 256, (3, *size), dtype=torch.uint8,
                                    generator=generator))
        corners = torch.rand(2, 2, generator=generator) * (size[0] / 2)
        boxes = torch.cat([corners, corners + size[0] / 3], 1)
        masks = np.zeros((2, *size), np.uint8)
        for i, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
            masks[i, y1:y2, x1:x2] = 1
        sample = DetDataSample(metainfo=dict(
            img_shape=size, ori_shape=size, pad_shape=size,
            scale_factor=(1., 1.), batch_input_shape=size))
        sample.gt_instances = InstanceData(
            bboxes=boxes, labels=torch.tensor([0, num_classes - 1]),
            masks=BitmapMasks(masks, *size))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def test_coco_recipe_is_vitdet_b_mask_rcnn_at_1024():
    """What the recipe is (its wiring runs below)."""
    cfg = Config.fromfile(RECIPE)
    backbone = cfg.model.backbone
    assert cfg.default_scope == 'mmdet'
    assert (backbone.arch, backbone.img_size, backbone.with_cls_token) == (
        'base', (1024, 1024), False)
    assert (backbone.window_size, backbone.global_attn_indexes,
            backbone.use_rel_pos) == (14, (2, 5, 8, 11), True)
    assert backbone.adapter_cfg.bottleneck == 128
    assert backbone.dispatch == 'mlp'
    assert cfg.model.dyt_loss.target_rate == 0.5
    assert cfg.model.neck.type == 'SimpleFPN'
    assert cfg.model.roi_head.bbox_head.type == 'Shared4Conv1FCBBoxHead'
    assert cfg.model.roi_head.mask_head.norm_cfg.type == 'LN2d'
    assert cfg.train_cfg.max_epochs == 12
    assert cfg.train_dataloader.dataset.pipeline[2].ratio_range == (0.1, 2.)
    assert cfg.val_evaluator.metric == ['bbox', 'segm']


def test_coco_recipe_trains_and_tests_on_cpu(tmp_path, timm_vit_b):
    """The recipe itself (ViT-B, 1024x1024, a timm checkpoint loaded) on a
    generated 1024x1024 image through its own pipelines: one training step
    and one prediction (one image each: the full-size model is what this
    checks, the batching is checked on the demo)."""
    options = det_demo_env(tmp_path, train=1, val=1, size=1024)
    options.update({
        'model.backbone.init_cfg.checkpoint': timm_vit_b[1],
        # activation checkpointing: without it this step keeps every
        # block's 1024x1024 attention for the backward pass
        'model.backbone.with_cp': True,
        **{f'{split}_dataloader.dataset.metainfo': dict(classes=DEMO_CLASSES)
           for split in ('train', 'val')},
        'train_dataloader.batch_size': 1,
        'val_dataloader.batch_size': 1,
    })
    cfg = Config.fromfile(RECIPE)
    cfg.merge_from_dict(options)
    model = build_detector(cfg)
    model.init_weights()  # loads the checkpoint (cls entry dropped, 14->64)
    backbone = model.backbone
    assert backbone.pos_embed.shape == (1, 64 * 64, 768)
    total = sum(p.numel() for p in backbone.parameters())
    trainable = sum(p.numel() for p in backbone.parameters()
                    if p.requires_grad)
    assert trainable / total < 0.03

    from mmdet.registry import DATASETS
    datasets = [
        DATASETS.build(cfg[f'{split}_dataloader'].dataset)
        for split in ('train', 'val')
    ]
    train, test = ([dataset[0]] for dataset in datasets)
    log_vars, predictions = train_and_test_step(
        model, pseudo_collate(train), pseudo_collate(test), lr=1e-4)
    assert {'loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox',
            'loss_mask', 'loss_rate'} <= set(log_vars)
    assert all(np.isfinite(float(v)) for v in log_vars.values())
    assert 0 < log_vars['act_rate'] < 1
    assert len(predictions) == 1
    for prediction in predictions:
        assert prediction.img_shape == (1024, 1024)
        assert 0 <= prediction.act_rate <= 1
        assert prediction.pred_instances.masks.shape[1:] == (1024, 1024)


@pytest.mark.parametrize('config, dispatch, adapter', [
    ('dyt_vitb_moe_mask-rcnn_1x.py', 'mlp', 'MoEAdapter'),
    ('vitb_adapter_mask-rcnn_1x.py', None, 'Adapter'),
])
def test_recipe_twins_differ_only_in_the_backbone(config, dispatch, adapter):
    twin = Config.fromfile(osp.join(REPO_ROOT, 'configs/coco', config))
    recipe = Config.fromfile(RECIPE)
    assert twin.model.backbone.dispatch == dispatch
    assert twin.model.backbone.adapter_cfg.type == adapter
    assert twin.model.backbone.adapter_cfg.bottleneck == 128
    for key in ('neck', 'rpn_head', 'roi_head', 'train_cfg', 'test_cfg'):
        assert twin.model[key] == recipe.model[key]
    assert twin.train_dataloader == recipe.train_dataloader


def test_swap_into_mmdet_mask_rcnn_config(tmp_path):
    """mmdet's own Mask R-CNN R50-FPN config, made DyT in a few lines."""
    config = tmp_path / 'dyt_swap.py'
    config.write_text("""
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmdyt'])
model = dict(
    type='DyTTwoStageDetector',
    backbone=dict(_delete_=True, type='DyTViT', arch='tiny', img_size=128,
                  with_cls_token=False, window_size=4,
                  global_attn_indexes=(5, 11), use_rel_pos=True),
    neck=dict(_delete_=True, type='SimpleFPN', backbone_channel=192))
""")
    cfg = Config.fromfile(str(config))
    assert cfg.model.roi_head.bbox_head.type == 'Shared2FCBBoxHead'  # kept
    model = build_detector(cfg)
    log_vars, predictions = train_and_test_step(
        model, det_batch((128, 128), num_classes=80), lr=1e-4)
    assert {'loss_rpn_cls', 'loss_bbox', 'loss_mask',
            'loss_rate'} <= set(log_vars)
    assert 0 < log_vars['act_rate'] < 1  # untrained: some tokens skipped
    assert predictions[0].pred_instances.bboxes.shape[1] == 4


def demo_detector(**backbone):
    cfg = Config.fromfile(osp.join(REPO_ROOT, 'configs/demo/det_demo.py'))
    cfg.model.backbone.init_cfg = None
    cfg.model.backbone.update(backbone)
    return build_detector(cfg)


def test_rate_loss_pulls_the_rate_and_reaches_the_dispatchers():
    model = demo_detector().train()
    data = model.data_preprocessor(det_batch((128, 128), 4), training=True)
    losses = model.loss(data['inputs'], data['data_samples'])
    rate = float(losses['act_rate'])
    assert losses['loss_rate'].item() == pytest.approx(
        2.0 * (rate - 0.5)**2, rel=1e-5)
    losses['loss_rate'].backward()
    grads = [d.linear.weight.grad for d in model.backbone.dispatchers()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


def test_adapter_only_detector_has_no_rate_loss():
    model = demo_detector(dispatch=None).train()
    data = model.data_preprocessor(det_batch((128, 128), 4), training=True)
    losses = model.loss(data['inputs'], data['data_samples'])
    assert 'loss_rate' not in losses and 'loss_mask' in losses


def test_predictions_carry_rate_and_masks_on_request():
    model = demo_detector().eval()
    model.return_dispatch_masks = True
    data = model.data_preprocessor(det_batch((128, 128), 4), training=False)
    with torch.no_grad():
        predictions = model.predict(data['inputs'], data['data_samples'])
        _, masks = model.backbone.forward_with_masks(data['inputs'])
    for index, prediction in enumerate(predictions):
        expected = torch.stack([m[index] for m in masks]).bool()
        assert torch.equal(prediction.dispatch_masks[0], expected)
        assert prediction.act_rate == pytest.approx(
            float(expected.float().mean()))
        assert prediction.dispatch_grid == (16, 16)


def test_detector_refuses_distillation():
    cfg = Config.fromfile(osp.join(REPO_ROOT, 'configs/demo/det_demo.py'))
    cfg.model.backbone.init_cfg = None
    cfg.model.dyt_loss = dict(distill=True)
    with pytest.raises(ValueError, match='does not distill'):
        build_detector(cfg)


# ------------------------------------------------------------------ neck
def test_simple_fpn_levels_are_vitdet_s():
    neck = SimpleFPN(backbone_channel=32, out_channels=8).eval()
    x = torch.randn(2, 32, 6, 6)
    with torch.no_grad():
        outs = neck((x, ))
    assert [tuple(o.shape) for o in outs] == [
        (2, 8, 24, 24), (2, 8, 12, 12), (2, 8, 6, 6), (2, 8, 3, 3),
        (2, 8, 2, 2)]
    # the 1x level is the 1x1 conv + LN and 3x3 conv + LN of the map
    stage = neck.stages[2]
    with torch.no_grad():
        one = stage[0].ln(stage[0].conv(x))
        expected = stage[1].ln(stage[1].conv(one))
        torch.testing.assert_close(outs[2], expected)
        # P6: max-pool (kernel 1, stride 2) of the coarsest level
        torch.testing.assert_close(outs[4], outs[3][:, :, ::2, ::2])
    assert all(m.conv.bias is None for m in neck.modules()
               if hasattr(m, 'conv') and hasattr(m, 'ln'))


def test_ln2d_normalises_channels():
    norm = LN2d(6)
    x = torch.randn(2, 6, 3, 4) * 3 + 2
    expected = torch.nn.functional.layer_norm(
        x.permute(0, 2, 3, 1), (6, ), eps=1e-6).permute(0, 3, 1, 2)
    torch.testing.assert_close(norm(x), expected)
    # contiguous (N, C, H, W), also from a channels-last input
    assert norm(x).is_contiguous()
    assert norm(x.contiguous(memory_format=torch.channels_last)
                ).is_contiguous()


@pytest.mark.parametrize('neck', ['SimpleFPN', 'FPN'])
def test_roi_features_are_contiguous_for_mmcvs_compiled_roi_align(neck):
    """mmcv's compiled RoIAlign reads its input's memory as a contiguous
    (N, C, H, W) array. DyTViT's maps are channels-last in memory (a token
    grid) and convolutions keep that layout, so the detector hands the RoI
    head contiguous maps, with ViTDet's SimpleFPN and with mmdet's FPN
    (on strided maps the compiled kernel pooled wrong values: the demo's
    box mAP fell from 0.5 to 0.01)."""
    cfg = Config.fromfile(osp.join(REPO_ROOT, 'configs/demo/det_demo.py'))
    cfg.model.backbone.init_cfg = None
    if neck == 'FPN':
        cfg.model.backbone.out_indices = (1, 3, 5)
        cfg.model.neck = dict(type='FPN', in_channels=[128] * 3,
                              out_channels=64, num_outs=5)
    model = build_detector(cfg).eval()
    data = model.data_preprocessor(det_batch((128, 128), 4), training=False)
    with torch.no_grad():
        maps = model.backbone(data['inputs'])
        features = model.extract_feat(data['inputs'])
    assert not maps[-1].is_contiguous()  # why: the grid's layout
    assert len(features) == 5
    assert all(f.is_contiguous() for f in features)


@pytest.mark.parametrize('options, message', [
    (dict(scale_factors=(3.0, )), 'scale_factors must be among'),
    (dict(num_outs=7), 'num_outs must be 4'),
    (dict(norm_cfg=dict(type='NoSuchNorm')), 'NoSuchNorm'),
])
def test_simple_fpn_bad_options_are_named(options, message):
    with pytest.raises((ValueError, KeyError), match=message):
        SimpleFPN(backbone_channel=32, **options)


def test_dispatch_masks_can_be_asked_for_in_test_cfg():
    cfg = Config.fromfile(osp.join(REPO_ROOT, 'configs/demo/det_demo.py'))
    cfg.model.backbone.init_cfg = None
    assert not build_detector(cfg).return_dispatch_masks
    cfg.model.test_cfg.return_dispatch_masks = True
    assert build_detector(cfg).return_dispatch_masks
