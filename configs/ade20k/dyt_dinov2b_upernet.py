# DyT on DINOv2 ViT-B/14 with 4 registers (timm's vit_base_patch14_reg4_dinov2)
# + UperNet on ADE20K, 518x518 crops (37 x 37 patches of 14), 160k iterations
# at batch 16 (8 GPUs x 2), target activation rate 0.5. The backbone's
# layout (patch 14, cls + 4 register tokens, layer scale, position embedding
# of the patches only) is read from timm's model definition (timm_arch); the
# cls and register tokens are prefix tokens: always computed, never skipped.
# The schedule, neck and heads are those of configs/ade20k/dyt_vitb.py; not
# a recipe of the paper (it adapts supervised IN-21K ViTs).
#   bash tools/dist_train.sh configs/ade20k/dyt_dinov2b_upernet.py 8
_base_ = ['./dyt_vitb.py']
crop_size = (518, 518)
# the DINOv2 checkpoint in timm format (timm.create_model(
# 'vit_base_patch14_reg4_dinov2', pretrained=True).state_dict())
pretrained = 'pretrain/vit_base_patch14_reg4_dinov2.pth'
model = dict(
    # DINOv2 uses ImageNet normalisation; test images padded to multiples
    # of 14 (the patch size), so that every sliding-window crop is 518
    data_preprocessor=dict(
        size=crop_size,
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        test_cfg=dict(size_divisor=14)),
    backbone=dict(
        _delete_=True,
        type='DyTViT',
        timm_arch='vit_base_patch14_reg4_dinov2',
        img_size=crop_size,
        out_indices=(3, 5, 7, 11),
        drop_path_rate=0.1,
        dispatch='mlp',
        dispatcher_cfg=dict(tau=5.0, threshold=0.5),
        adapter_cfg=dict(type='Adapter', bottleneck=64, scale=0.1),
        frozen=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341),
                  crop_batch=None))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(2048, 512), ratio_range=(0.5, 2.0),
         keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
