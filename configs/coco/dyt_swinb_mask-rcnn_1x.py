# DyT on Swin-B (window 7) + FPN + Mask R-CNN on COCO, 12 epochs: mmdet's own
# Swin Mask R-CNN 1x recipe (mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py) at the
# Swin-B size, the backbone swapped for DyTSwinTransformer (a dispatcher and
# an adapter, d = 64, at every FFN; target activation rate 0.5) and the
# detector for DyTTwoStageDetector (adds the rate loss). Not in the paper.
#   bash tools/dist_train.sh configs/coco/dyt_swinb_mask-rcnn_1x.py 8
_base_ = ['mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py']
custom_imports = dict(imports=['mmdyt'], allow_failed_imports=False)
# an IN-22K Swin-B checkpoint in mmseg/mmdet parameter names (the official
# file converted with mmseg's tools/model_converters/swin2mmseg.py: mmdet's
# convert_weights=True conversion is not part of DyTSwinTransformer)
pretrained = 'pretrain/swin_base_patch4_window7_224_22k_mmseg.pth'
model = dict(
    type='DyTTwoStageDetector',
    backbone=dict(
        _delete_=True,
        type='DyTSwinTransformer',
        embed_dims=128,
        depths=[2, 2, 18, 2],
        num_heads=[4, 8, 16, 32],
        window_size=7,
        mlp_ratio=4,
        qkv_bias=True,
        drop_path_rate=0.3,
        patch_norm=True,
        out_indices=(0, 1, 2, 3),
        dispatch='mlp',
        dispatcher_cfg=dict(tau=5.0, threshold=0.5),
        adapter_cfg=dict(type='Adapter', bottleneck=64, scale=0.1),
        frozen=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[128, 256, 512, 1024]),
    dyt_loss=dict(target_rate=0.5, rate_weight=2.0))
custom_hooks = [
    dict(type='DispatchStatsHook'),
    dict(type='IterSeedHook'),  # exact resume: seeds every iteration
    dict(type='ParameterCountHook'),
]
