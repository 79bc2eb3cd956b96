# Adapter-only baseline of the Swin segmentation demo: configs/demo/
# seg_demo_swin.py without token dispatch (no dispatcher, no rate loss),
# trained the same way. DyT's Swin demo mIoU is compared with it.
_base_ = ['./seg_demo_swin.py']
model = dict(backbone=dict(dispatch=None))
