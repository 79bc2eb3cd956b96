# DyT ViT-B/16 as ViTDet's backbone + ViTDet's simple feature pyramid + Mask
# R-CNN with ViTDet's LN heads: the paper's detection model (Table 11). The
# paper gives the backbone (DyT ViT-B, MLP dispatch, adapter bottleneck 128)
# and the 12-epoch schedule; the rest is ViTDet's (Li et al., ECCV 2022), as
# mmdet's ViTDet project builds it:
# - windowed attention (14x14 windows, the 64x64 grid padded to 70x70) in all
#   blocks but 2, 5, 8 and 11, which attend globally;
# - decomposed relative positions in every block (attn.rel_pos_h/w; zero at
#   init and trainable, like the adapters: the ImageNet checkpoint has none);
# - no cls token; the pre-trained 14x14 position embedding resampled to
#   64x64 (bicubic) and the cls entry dropped when loading;
# - SimpleFPN (strides 4..32 from the 1/16 map, plus P6 by max-pool), LN in
#   the FPN, the RPN's two convs, the 4-conv + 1-fc box head and the mask
#   head;
# - stochastic depth 0.1.
# Only the backbone, the neck, the heads' norms and the detector type differ
# from mmdet's Mask R-CNN R50-FPN base.
_base_ = ['mmdet::_base_/models/mask-rcnn_r50_fpn.py']
custom_imports = dict(imports=['mmdyt'], allow_failed_imports=False)

# the IN-21K timm checkpoint (jx_vit_base_patch16_224_in21k) in timm format
pretrained = 'pretrain/vit_base_patch16_224_in21k.pth'
norm_cfg = dict(type='LN2d', requires_grad=True)
model = dict(
    type='DyTTwoStageDetector',
    # IN-21K ViTs use Inception normalisation: mean = std = 127.5; every
    # batch is padded to 1024x1024 (ViTDet's large-scale jitter crops to it)
    data_preprocessor=dict(
        mean=[127.5, 127.5, 127.5],
        std=[127.5, 127.5, 127.5],
        pad_size_divisor=32,
        batch_augments=[
            dict(type='BatchFixedSizePad', size=(1024, 1024), pad_mask=True)
        ]),
    backbone=dict(
        _delete_=True,
        type='DyTViT',
        arch='base',
        img_size=(1024, 1024),
        patch_size=16,
        with_cls_token=False,
        out_indices=(11, ),
        drop_path_rate=0.1,
        window_size=14,
        global_attn_indexes=(2, 5, 8, 11),
        use_rel_pos=True,
        dispatch='mlp',
        dispatcher_cfg=dict(tau=5.0, threshold=0.5),
        adapter_cfg=dict(type='Adapter', bottleneck=128, scale=0.1),
        frozen=True,
        # with_cp=True recomputes each block's activations in the backward
        # pass instead of keeping them: less training memory for about one
        # more forward
        with_cp=False,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(
        _delete_=True,
        type='SimpleFPN',
        backbone_channel=768,
        out_channels=256,
        scale_factors=(4.0, 2.0, 1.0, 0.5),
        num_outs=5,
        norm_cfg=norm_cfg),
    rpn_head=dict(num_convs=2),
    roi_head=dict(
        bbox_head=dict(
            type='Shared4Conv1FCBBoxHead',
            conv_out_channels=256,
            norm_cfg=norm_cfg),
        mask_head=dict(norm_cfg=norm_cfg)),
    dyt_loss=dict(target_rate=0.5, rate_weight=2.0))
