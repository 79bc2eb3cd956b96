# DyT ViT-B/16 on Kinetics-400, 8 frames x 224^2, sampling rate 16: the paper's
# recipe (docs/en/advanced_guides/method.md#training-recipes; the paper's Table 6: 75.28 top-1,
# 108.31 GFLOPs per view): target activation rate 0.5, complete-model
# distillation on, 12 epochs at batch 128 (8 GPUs x 16), test 1 spatial x 3
# temporal views.
# Reported accuracy: the authors' release logs the maximum multi-view test
# accuracy over all evaluations of a run; mmdyt validates one view per clip
# during training and reports the final multi-view test (tools/test.py).
#   bash tools/dist_train.sh configs/kinetics400/dyt_vitb_8x224.py 8
_base_ = [
    '../_base_/models/dyt_vitb_video.py',
    '../_base_/datasets/kinetics400_8x16x1.py',
    '../_base_/schedules/dyt_video_adamw_12e.py',
    'mmaction::_base_/default_runtime.py',
]
model = dict(
    cls_head=dict(num_classes=400),
    # L = L_cls + L_cls(complete) + KL(complete || dynamic) + 2 L_rate
    dyt_loss=dict(target_rate=0.5, rate_weight=2.0, distill=True))
default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=3))
