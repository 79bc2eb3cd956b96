# DyT video demo: the small demo ViT (pre-trained by
# tools/demo/pretrain_demo_vit.py on 96^2 images), frozen and adapted with DyT on
# the generated moving-shapes clips (tools/demo/make_demo_data.py --task video;
# the class is the pair of shapes that pass by one after the other, which no
# single frame shows: see tools/demo/video_demo_data.py). Structured like
# configs/kinetics400/dyt_vitb_8x224.py: DyTRecognizer3D, per-frame DyTViT,
# AttentivePoolHead, target rate 0.5 and complete-model distillation.
# Trains on a CPU in a few minutes: `make demo-video`.
_base_ = ['mmaction::_base_/default_runtime.py']
custom_imports = dict(imports=['mmdyt'], allow_failed_imports=False)
default_scope = 'mmaction'

data_root = 'data/demo/video'
pretrained = 'data/demo/demo_vit.pth'
frame_size = 64  # the checkpoint's 96^2 pos-embed is resampled to 8x8
clip_len = 4  # one frame per quarter of the clip (TSN-style sampling)
num_classes = 4  # pairs of shapes (tools/demo/video_demo_data.py: CLASSES)

model = dict(
    type='DyTRecognizer3D',
    backbone=dict(
        type='DyTViT',
        arch=dict(
            embed_dims=128,
            num_layers=6,
            num_heads=4,
            feedforward_channels=512),
        img_size=frame_size,
        patch_size=8,
        out_type='raw',
        final_norm=True,
        dispatch='mlp',
        adapter_cfg=dict(type='Adapter', bottleneck=32, scale=0.1),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    cls_head=dict(
        type='AttentivePoolHead',
        num_classes=num_classes,
        in_channels=128,
        num_heads=4,
        dropout_ratio=0.,
        topk=(1, ),
        average_clips='score'),
    data_preprocessor=dict(
        type='ActionDataPreprocessor',
        mean=[127.5, 127.5, 127.5],
        std=[127.5, 127.5, 127.5],
        format_shape='NCTHW'),
    dyt_loss=dict(target_rate=0.5, rate_weight=2.0, distill=True))

# OpenCV decoding (mmcv.VideoReader): works without decord; with decord,
# DecordInit / DecordDecode give the same RGB frames.
train_pipeline = [
    dict(type='OpenCVInit'),
    dict(type='UniformSample', clip_len=clip_len),
    dict(type='OpenCVDecode'),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
val_pipeline = [
    dict(type='OpenCVInit'),
    dict(type='UniformSample', clip_len=clip_len, test_mode=True),
    dict(type='OpenCVDecode'),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
test_pipeline = [  # 2 temporal views, scores averaged
    dict(type='OpenCVInit'),
    dict(
        type='UniformSample', clip_len=clip_len, num_clips=2,
        test_mode=True),
    dict(type='OpenCVDecode'),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
dataset = dict(type='VideoDataset')
train_dataloader = dict(
    batch_size=8,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        **dataset,
        ann_file=f'{data_root}/train.txt',
        data_prefix=dict(video=f'{data_root}/train'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        **dataset,
        ann_file=f'{data_root}/val.txt',
        data_prefix=dict(video=f'{data_root}/val'),
        pipeline=val_pipeline,
        test_mode=True))
test_dataloader = dict(
    batch_size=8,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        **dataset,
        ann_file=f'{data_root}/val.txt',
        data_prefix=dict(video=f'{data_root}/val'),
        pipeline=test_pipeline,
        test_mode=True))
val_evaluator = dict(
    type='AccMetric',
    metric_list=('top_k_accuracy', ),
    metric_options=dict(top_k_accuracy=dict(topk=(1, ))))
test_evaluator = val_evaluator

max_iters = 600
warmup_iters = 10
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=2e-3, betas=(0.9, 0.999), weight_decay=0.01),
    # a short schedule: the dispatchers must commit to their decisions fast
    # (|logit| large), or the deterministic evaluation rate (logit > 0) falls
    # short of the noisy training rate that the rate loss controls
    paramwise_cfg=dict(custom_keys={'_dispatcher': dict(lr_mult=30.)}))
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=0.1,
        by_epoch=False,
        begin=0,
        end=warmup_iters),
    dict(
        type='CosineAnnealingLR',
        T_max=max_iters - warmup_iters,
        eta_min=0.,
        by_epoch=False,
        begin=warmup_iters,
        end=max_iters)
]
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=25, log_metric_by_epoch=False),
    checkpoint=dict(
        type='CheckpointHook',
        by_epoch=False,
        interval=200,
        max_keep_ckpts=2,
        save_best=None))
custom_hooks = [
    dict(type='DispatchStatsHook'),
    dict(type='IterSeedHook'),  # exact resume: seeds every iteration
    dict(type='ParameterCountHook'),
]
env_cfg = dict(dist_cfg=dict(backend='gloo'))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
