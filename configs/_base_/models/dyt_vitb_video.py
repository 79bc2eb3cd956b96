# DyT ViT-B/16 for video recognition (docs/en/advanced_guides/method.md#video-recognition): the
# frozen IN-21K ViT runs on every frame of an 8-frame clip (frames folded into
# the batch, each with its own cls token, no temporal embedding); after the
# final norm a learned query pools the tokens of all frames (AttentivePoolHead)
# for the linear classifier. Adapters d=64 (scale 0.1) and a token dispatcher
# in every block, MLP dispatch. Dataset configs set num_classes and dyt_loss;
# the adapter-only baselines switch to a plain Recognizer3D.
custom_imports = dict(imports=['mmdyt'], allow_failed_imports=False)

# the IN-21K timm checkpoint (jx_vit_base_patch16_224_in21k) in timm format
pretrained = 'pretrain/vit_base_patch16_224_in21k.pth'
model = dict(
    type='DyTRecognizer3D',
    backbone=dict(
        type='DyTViT',
        arch='base',
        img_size=224,
        patch_size=16,
        out_type='raw',  # (N, T, L, C): every frame's tokens, cls included
        final_norm=True,
        drop_path_rate=0.,  # the paper's recipe: no drop path for video
        dispatch='mlp',
        dispatcher_cfg=dict(tau=5.0, threshold=0.5),
        adapter_cfg=dict(type='Adapter', bottleneck=64, scale=0.1),
        frozen=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    cls_head=dict(
        type='AttentivePoolHead',
        num_classes=400,
        in_channels=768,
        num_heads=12,
        dropout_ratio=0.,  # as the authors' public release (drop_rate 0)
        average_clips='score'),  # the paper averages the views' logits
    # IN-21K ViTs use Inception normalisation: mean = std = 127.5 (RGB;
    # decord and mmaction2's OpenCVDecode both give RGB frames)
    data_preprocessor=dict(
        type='ActionDataPreprocessor',
        mean=[127.5, 127.5, 127.5],
        std=[127.5, 127.5, 127.5],
        format_shape='NCTHW'))
