# DyT ViT-B/16 + simple FPN (mmseg's Feature2Pyramid, as in its BEiT/MAE
# configs) + UperNet (channels 768) + FCN auxiliary head: the paper's
# segmentation model (docs/en/advanced_guides/method.md#semantic-segmentation), as the authors'
# public release builds it:
# - a BEiT-style relative position bias in every block (use_rel_pos_bias:
#   zero at init, trainable, 12 x (63^2 + 3) x 12 = 572k parameters; the
#   IN-21K checkpoint has none);
# - position embedding resampled 14x14 -> 32x32 with bicubic interpolation,
#   align_corners=False, no anti-aliasing (DyTViT's loader does this);
# - the neck's 4x branch ConvT -> GELU -> ConvT without a norm between
#   (IdentityNorm; mmseg's Feature2Pyramid would put a SyncBN there).
# Only the backbone, the neck's norm and the segmentor type differ from
# mmseg's MAE UperNet base.
_base_ = ['mmseg::_base_/models/upernet_mae.py']
custom_imports = dict(imports=['mmdyt'], allow_failed_imports=False)

# the IN-21K timm checkpoint (jx_vit_base_patch16_224_in21k) in timm format
pretrained = 'pretrain/vit_base_patch16_224_in21k.pth'
model = dict(
    type='DyTEncoderDecoder',
    # IN-21K ViTs use Inception normalisation: mean = std = 127.5
    # DyTViT takes inputs whose sides are multiples of the patch size: pad
    # test images (and so sliding-window crops) to multiples of 16
    data_preprocessor=dict(mean=[127.5, 127.5, 127.5],
                           std=[127.5, 127.5, 127.5],
                           test_cfg=dict(size_divisor=16)),
    backbone=dict(
        _delete_=True,
        type='DyTViT',
        arch='base',
        img_size=(512, 512),
        patch_size=16,
        out_indices=(3, 5, 7, 11),
        drop_path_rate=0.1,
        dispatch='mlp',
        dispatcher_cfg=dict(tau=5.0, threshold=0.5),
        adapter_cfg=dict(type='Adapter', bottleneck=64, scale=0.1),
        use_rel_pos_bias=True,
        frozen=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(embed_dim=768, rescales=[4, 2, 1, 0.5],
              norm_cfg=dict(type='IdentityNorm')),
    decode_head=dict(in_channels=[768, 768, 768, 768], channels=768),
    auxiliary_head=dict(in_channels=768),
    dyt_loss=dict(target_rate=0.5, rate_weight=2.0, distill=False))
