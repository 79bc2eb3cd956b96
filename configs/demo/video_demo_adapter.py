# Adapter-only baseline of the video demo: configs/demo/video_demo.py without
# token dispatch (no dispatcher, no rate or distillation loss), trained the
# same way. DyT's demo accuracy is compared with it (docs/en/benchmarks/learning.md).
_base_ = ['./video_demo.py']
model = dict(backbone=dict(dispatch=None), dyt_loss=dict(distill=False))
