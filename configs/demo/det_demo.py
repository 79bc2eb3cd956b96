# DyT detection demo: the small demo ViT (pre-trained by
# tools/demo/pretrain_demo_vit.py), frozen and adapted with DyT as a ViTDet
# backbone + SimpleFPN + Mask R-CNN on the generated COCO-format shapes
# dataset (tools/demo/det_demo_data.py), evaluated with mmdet's CocoMetric.
# Trains on a CPU in a few minutes: `make demo-det`. Built on the COCO
# recipe's model (configs/coco/dyt_vitb_mask-rcnn_1x.py), scaled down:
# 128x128 images, patch 8 (the pyramid has strides 2..32), windows of 4
# patches with global blocks 2 and 5, a 64-channel FPN, 32-channel head
# convs, one RPN conv, 64 sampled
# RoIs per image and RoIAlign with 2x2 samples per bin (instead of adaptive
# sampling, which at stride 2 takes many per bin), for CPU speed.
_base_ = [
    '../_base_/models/mask-rcnn_dyt_vitdet-b.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmdyt'], allow_failed_imports=False)
default_scope = 'mmdet'

data_root = 'data/demo/det/'
pretrained = 'data/demo/demo_vit.pth'
image_size = (128, 128)
classes = ('circle', 'square', 'triangle', 'cross')
num_classes = len(classes)
channels = 64
strides = [2, 4, 8, 16]

model = dict(
    data_preprocessor=dict(batch_augments=[
        dict(type='BatchFixedSizePad', size=image_size, pad_mask=True)
    ]),
    backbone=dict(
        arch=dict(
            _delete_=True,
            embed_dims=128,
            num_layers=6,
            num_heads=4,
            feedforward_channels=512),
        img_size=image_size,
        patch_size=8,
        out_indices=(5, ),
        drop_path_rate=0.,
        window_size=4,
        global_attn_indexes=(2, 5),
        adapter_cfg=dict(type='Adapter', bottleneck=32, scale=0.1),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(backbone_channel=128, out_channels=channels),
    rpn_head=dict(
        num_convs=1,
        in_channels=channels,
        feat_channels=channels,
        anchor_generator=dict(strides=strides + [32])),
    roi_head=dict(
        bbox_roi_extractor=dict(
            roi_layer=dict(sampling_ratio=2),
            out_channels=channels,
            featmap_strides=strides),
        bbox_head=dict(
            in_channels=channels,
            conv_out_channels=32,
            fc_out_channels=256,
            num_classes=num_classes),
        mask_roi_extractor=dict(
            roi_layer=dict(sampling_ratio=2),
            out_channels=channels,
            featmap_strides=strides),
        mask_head=dict(
            in_channels=channels,
            conv_out_channels=32,
            num_classes=num_classes)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=500, max_per_img=200),
        rcnn=dict(sampler=dict(num=64), mask_size=28)),
    test_cfg=dict(
        rpn=dict(nms_pre=500, max_per_img=100), rcnn=dict(max_per_img=20)))

metainfo = dict(classes=classes)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomResize', scale=image_size, ratio_range=(0.8, 1.25),
         keep_ratio=True),
    dict(type='RandomCrop', crop_type='absolute_range',
         crop_size=image_size, recompute_bbox=True,
         allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                    'scale_factor'))
]
train_dataloader = dict(
    batch_size=8,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    batch_sampler=None,
    dataset=dict(
        type='CocoDataset',
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train2017.json',
        data_prefix=dict(img='train2017/'),
        filter_cfg=dict(filter_empty_gt=True),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=1,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='CocoDataset',
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val2017.json',
        data_prefix=dict(img='val2017/'),
        test_mode=True,
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(
    type='CocoMetric',
    ann_file=data_root + 'annotations/instances_val2017.json',
    metric=['bbox', 'segm'])
test_evaluator = val_evaluator

max_iters = 300
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999),
                   weight_decay=0.05),
    # a short schedule: let the dispatchers commit to their decisions fast
    paramwise_cfg=dict(custom_keys={'_dispatcher': dict(lr_mult=10.)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0,
         end=50),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters,
         milestones=[int(0.8 * max_iters)], gamma=0.1)
]
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters,
    val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=25, log_metric_by_epoch=False),
    checkpoint=dict(
        type='CheckpointHook', by_epoch=False, interval=200,
        max_keep_ckpts=2))
custom_hooks = [
    dict(type='DispatchStatsHook'),
    dict(type='IterSeedHook'),  # exact resume: seeds every iteration
    dict(type='ParameterCountHook'),
]
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='gloo'))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
