# Something-Something V2 as the paper trains on it (settings from ST-Adapter;
# see docs/en/advanced_guides/method.md#training-recipes): 8 frames sampled TSN-style (one per
# eighth of the video), RandomResizedCrop (area 0.08-1), no flip (labels such
# as "left to right" would change), RandAugment; test 3 spatial x 1 temporal
# views.
# mmaction2's layout: data/sthv2/videos and sthv2_{train,val}_list_videos.txt.
# Without decord, use dict(type='OpenCVInit') / dict(type='OpenCVDecode').
#
# RandAugment: the paper's timm policy rand-m7-n4-mstd0.5-inc1 is approximated
# by torchvision's RandAugment (4 ops at magnitude 7 of 10, the same ops and
# magnitude for all frames of a clip) through mmaction2's TorchVisionWrapper:
# pure PyTorch, no compiled op or extra package. It has no magnitude noise
# (mstd0.5) and no "increasing" op variants (inc1). mmaction2's other
# RandAugment wrappers need packages that are not installed:
# PytorchVideoWrapper(op='RandAugment') needs pytorchvideo (whose 0.1.5
# release imports the removed torchvision.transforms.functional_tensor), and
# Imgaug(transforms='default') needs imgaug.
dataset_type = 'VideoDataset'
data_root = 'data/sthv2/videos'
ann_file_train = 'data/sthv2/sthv2_train_list_videos.txt'
ann_file_val = 'data/sthv2/sthv2_val_list_videos.txt'
ann_file_test = 'data/sthv2/sthv2_val_list_videos.txt'
clip_len = 8

train_pipeline = [
    dict(type='DecordInit'),
    dict(type='UniformSample', clip_len=clip_len),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(-1, 256)),
    dict(
        type='TorchVisionWrapper',
        op='RandAugment',
        num_ops=4,
        magnitude=7,
        num_magnitude_bins=11),
    dict(type='RandomResizedCrop', area_range=(0.08, 1.0)),
    dict(type='Resize', scale=(224, 224), keep_ratio=False),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
val_pipeline = [
    dict(type='DecordInit'),
    dict(type='UniformSample', clip_len=clip_len, test_mode=True),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(-1, 224)),
    dict(type='CenterCrop', crop_size=224),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
test_pipeline = [  # 3 spatial x 1 temporal views
    dict(type='DecordInit'),
    dict(type='UniformSample', clip_len=clip_len, num_clips=1,
         test_mode=True),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(-1, 224)),
    dict(type='ThreeCrop', crop_size=224),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]

train_dataloader = dict(
    batch_size=16,  # x 8 GPUs = 128
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        ann_file=ann_file_train,
        data_prefix=dict(video=data_root),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=16,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        ann_file=ann_file_val,
        data_prefix=dict(video=data_root),
        pipeline=val_pipeline,
        test_mode=True))
test_dataloader = dict(
    batch_size=1,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        ann_file=ann_file_test,
        data_prefix=dict(video=data_root),
        pipeline=test_pipeline,
        test_mode=True))
val_evaluator = dict(type='AccMetric')
test_evaluator = val_evaluator
