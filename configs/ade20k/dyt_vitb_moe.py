# The paper's DyT-dagger on ADE20K: configs/ade20k/dyt_vitb.py with a
# mixture of 4 adapter experts per block (Table 10: 47.67 mIoU).
_base_ = ['./dyt_vitb.py']
model = dict(
    backbone=dict(
        adapter_cfg=dict(
            type='MoEAdapter', num_experts=4, bottleneck=64, scale=0.1)))
