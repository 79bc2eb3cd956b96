# Adapter-only baseline (AdaptFormer-style, no token dispatch: every token
# through every block) with the recipe of configs/kinetics400/
# dyt_vitb_8x224.py: a plain mmaction2 Recognizer3D, so no rate or
# distillation loss. Table 6: AdaptFormer 75.53 top-1, 144.39 GFLOPs.
_base_ = [
    '../_base_/models/dyt_vitb_video.py',
    '../_base_/datasets/kinetics400_8x16x1.py',
    '../_base_/schedules/dyt_video_adamw_12e.py',
    'mmaction::_base_/default_runtime.py',
]
model = dict(
    type='Recognizer3D',
    backbone=dict(dispatch=None),
    cls_head=dict(num_classes=400))
default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=3))
