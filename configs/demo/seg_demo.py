# DyT segmentation demo: the small demo ViT (pre-trained by
# tools/demo/pretrain_demo_vit.py), frozen and adapted with DyT on the generated
# ADE20K-layout shapes dataset (tools/demo/make_demo_data.py). Trains on a CPU in
# a few minutes: `make demo`. Structured like configs/ade20k/dyt_vitb.py.
custom_imports = dict(imports=['mmdyt'], allow_failed_imports=False)
default_scope = 'mmseg'

data_root = 'data/demo/seg'
pretrained = 'data/demo/demo_vit.pth'
img_size = (96, 96)
num_classes = 5  # background, circle, square, triangle, cross
norm_cfg = dict(type='BN', requires_grad=True)

model = dict(
    type='DyTEncoderDecoder',
    data_preprocessor=dict(
        type='SegDataPreProcessor',
        mean=[127.5, 127.5, 127.5],
        std=[127.5, 127.5, 127.5],
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=255,
        size=img_size),
    backbone=dict(
        type='DyTViT',
        arch=dict(
            embed_dims=128,
            num_layers=6,
            num_heads=4,
            feedforward_channels=512),
        img_size=img_size,
        patch_size=8,
        out_indices=(1, 2, 3, 5),
        dispatch='mlp',
        adapter_cfg=dict(type='Adapter', bottleneck=32, scale=0.1),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(
        type='Feature2Pyramid',
        embed_dim=128,
        rescales=[4, 2, 1, 0.5],
        norm_cfg=norm_cfg),
    decode_head=dict(
        type='UPerHead',
        in_channels=[128, 128, 128, 128],
        in_index=[0, 1, 2, 3],
        pool_scales=(1, 2, 3, 6),
        channels=64,
        dropout_ratio=0.1,
        num_classes=num_classes,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(
        type='FCNHead',
        in_channels=128,
        in_index=2,
        channels=32,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=num_classes,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
    dyt_loss=dict(target_rate=0.5, rate_weight=2.0),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))

# ADE20K layout and conventions: annotation 0 is ignored, 1.. are classes
dataset = dict(
    type='BaseSegDataset',
    data_root=data_root,
    metainfo=dict(
        classes=('background', 'circle', 'square', 'triangle', 'cross'),
        palette=[[120, 120, 120], [230, 25, 75], [60, 180, 75],
                 [255, 225, 25], [0, 130, 200]]),
    img_suffix='.jpg',
    seg_map_suffix='.png',
    reduce_zero_label=True)
# CheckedLoadImageFromFile (mmdyt): an unreadable training image is skipped
# with a warning naming it. In testing CheckImageFile (mmdyt) stops the run
# with its path, and the image is loaded by the standard LoadImageFromFile,
# which the inference APIs (MMSegInferencer) expect.
train_pipeline = [
    dict(type='CheckedLoadImageFromFile', on_error='skip'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='CheckImageFile'),
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    batch_size=8,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        **dataset,
        data_prefix=dict(
            img_path='images/training', seg_map_path='annotations/training'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        **dataset,
        data_prefix=dict(
            img_path='images/validation',
            seg_map_path='annotations/validation'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

max_iters = 600
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-3, betas=(0.9, 0.999),
                   weight_decay=0.01),
    # a short schedule: let the dispatchers commit to their decisions fast
    paramwise_cfg=dict(custom_keys={'_dispatcher': dict(lr_mult=10.)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0,
         end=50),
    dict(type='PolyLR', power=1.0, eta_min=0., by_epoch=False, begin=50,
         end=max_iters)
]
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=25, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(
        type='CheckpointHook', by_epoch=False, interval=200, max_keep_ckpts=2),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
custom_hooks = [
    dict(type='DispatchStatsHook'),
    dict(type='IterSeedHook'),  # exact resume: seeds every iteration
    dict(type='ParameterCountHook'),
]
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='gloo'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(
    type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)
