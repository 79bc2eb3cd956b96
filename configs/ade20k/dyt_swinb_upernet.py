# DyT on Swin-B (window 12, IN-22K 384 pre-training) + UperNet on ADE20K,
# 512x512, 160k iterations at batch 16 (8 GPUs x 2): mmseg's own Swin-B
# UperNet recipe with the backbone swapped for DyTSwinTransformer (a token
# dispatcher and an adapter, d = 64, at every FFN of every stage; the paper's
# Swin-B setting, Table 17), the DyT segmentor and losses (target rate 0.5),
# and mmdyt's DyT schedule (only adapters, dispatchers and heads train).
#   bash tools/dist_train.sh configs/ade20k/dyt_swinb_upernet.py 8
_base_ = [
    'mmseg::swin/swin-base-patch4-window12-in22k-384x384-pre_upernet_'
    '8xb2-160k_ade20k-512x512.py'
]
custom_imports = dict(imports=['mmdyt'], allow_failed_imports=False)
model = dict(
    type='DyTEncoderDecoder',
    backbone=dict(
        type='DyTSwinTransformer',
        dispatch='mlp',
        dispatcher_cfg=dict(tau=5.0, threshold=0.5),
        adapter_cfg=dict(type='Adapter', bottleneck=64, scale=0.1),
        frozen=True),
    dyt_loss=dict(target_rate=0.5, rate_weight=2.0, distill=False))
# mmseg's Swin schedule is replaced by mmdyt's DyT one
# (configs/_base_/schedules/dyt_seg_160k.py: AdamW, lr 1e-3, AMP, 1500 warm-up
# iterations, poly decay), with DyT's statistics hooks
max_iters = 160000
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999),
                   weight_decay=0.05))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0,
         end=1500),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=1500,
         end=max_iters)
]
custom_hooks = [
    dict(type='DispatchStatsHook'),
    dict(type='IterSeedHook'),  # exact resume: seeds every iteration
    dict(type='ParameterCountHook'),
]
