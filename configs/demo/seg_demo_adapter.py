# Adapter-only baseline of the segmentation demo: configs/demo/seg_demo.py
# without token dispatch (no dispatcher, no rate loss), trained the same way.
# DyT's demo mIoU is compared with it (docs/en/benchmarks/learning.md).
_base_ = ['./seg_demo.py']
model = dict(backbone=dict(dispatch=None))
