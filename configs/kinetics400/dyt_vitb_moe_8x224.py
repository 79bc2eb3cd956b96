# The paper's DyT-dagger on Kinetics-400: configs/kinetics400/dyt_vitb_8x224.py
# with a mixture of 4 adapter experts per block, routed per frame
# (Table 6: 75.43 top-1, 105.45 GFLOPs).
_base_ = ['./dyt_vitb_8x224.py']
model = dict(
    backbone=dict(
        adapter_cfg=dict(
            type='MoEAdapter', num_experts=4, bottleneck=64, scale=0.1)))
