# DyT ViT-B/16 (ViTDet backbone) + SimpleFPN + Mask R-CNN on COCO, 1024x1024
# large-scale jitter, 12 epochs at batch 64 (16 GPUs x 4), adapter
# bottleneck 128, target activation rate 0.5: the paper's Table 11 (box /
# mask mAP 39.78 / 36.11; backbone + FPN 468.40 GFLOPs vs 554.86 dense).
#   bash tools/dist_train.sh configs/coco/dyt_vitb_mask-rcnn_1x.py 16
_base_ = [
    '../_base_/models/mask-rcnn_dyt_vitdet-b.py',
    '../_base_/datasets/coco_instance_lsj_1024.py',
    'mmdet::_base_/default_runtime.py',
    '../_base_/schedules/dyt_det_1x.py',
]
default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=3))
