# Adapter-only baseline (AdaptFormer-style, no token dispatch) with the
# recipe of configs/sthv2/dyt_vitb_8x224.py: a plain mmaction2
# Recognizer3D, so no rate or distillation loss. Table 6: AdaptFormer 45.36.
_base_ = [
    '../_base_/models/dyt_vitb_video.py',
    '../_base_/datasets/sthv2_u8.py',
    '../_base_/schedules/dyt_video_adamw_50e.py',
    'mmaction::_base_/default_runtime.py',
]
model = dict(
    type='Recognizer3D',
    backbone=dict(dispatch=None),
    cls_head=dict(num_classes=174))
default_hooks = dict(checkpoint=dict(interval=5, max_keep_ckpts=3))
