# The paper's DyT-dagger on COCO: configs/coco/dyt_vitb_mask-rcnn_1x.py with
# a mixture of 4 adapter experts per block (Table 11: box / mask mAP
# 40.97 / 37.11; 466.32 GFLOPs).
_base_ = ['./dyt_vitb_mask-rcnn_1x.py']
model = dict(
    backbone=dict(
        adapter_cfg=dict(
            type='MoEAdapter', num_experts=4, bottleneck=128, scale=0.1)))
