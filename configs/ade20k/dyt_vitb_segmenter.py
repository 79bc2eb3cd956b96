# DyT ViT-B/16 + Segmenter's mask transformer (2 layers, mmseg's
# SegmenterMaskTransformerHead) on ADE20K, 512x512: a decode head light
# enough that the backbone dominates the cost, so that DyT's savings reach
# the whole model (UperNet, at 768 channels, is 80% of the UperNet recipe's
# FLOPs). The backbone and the schedule are those of
# configs/ade20k/dyt_vitb.py; the backbone gives its last block's map with
# the final LayerNorm, as mmseg's Segmenter configs take it. Not in the
# paper, which reports UperNet only.
#   bash tools/dist_train.sh configs/ade20k/dyt_vitb_segmenter.py 8
_base_ = [
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    '../_base_/schedules/dyt_seg_160k.py',
]
custom_imports = dict(imports=['mmdyt'], allow_failed_imports=False)

# the IN-21K timm checkpoint (jx_vit_base_patch16_224_in21k) in timm format
pretrained = 'pretrain/vit_base_patch16_224_in21k.pth'
crop_size = (512, 512)
num_classes = 150
model = dict(
    type='DyTEncoderDecoder',
    data_preprocessor=dict(
        type='SegDataPreProcessor',
        mean=[127.5, 127.5, 127.5],
        std=[127.5, 127.5, 127.5],
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=255,
        size=crop_size,
        test_cfg=dict(size_divisor=16)),
    backbone=dict(
        type='DyTViT',
        arch='base',
        img_size=crop_size,
        patch_size=16,
        out_indices=(11, ),
        final_norm=True,
        drop_path_rate=0.1,
        dispatch='mlp',
        dispatcher_cfg=dict(tau=5.0, threshold=0.5),
        adapter_cfg=dict(type='Adapter', bottleneck=64, scale=0.1),
        use_rel_pos_bias=True,
        frozen=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(
        type='SegmenterMaskTransformerHead',
        in_channels=768,
        channels=768,
        num_classes=num_classes,
        num_layers=2,
        num_heads=12,
        embed_dims=768,
        dropout_ratio=0.0,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    dyt_loss=dict(target_rate=0.5, rate_weight=2.0),
    train_cfg=dict(),
    # single-scale sliding-window test (crop 512, stride 341)
    # crop_batch=None: the crops of a test batch go through the model
    # together (up to 8 of 512 x 512 per forward); 1 is mmseg's crop-by-crop
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341),
                  crop_batch=None))
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
