# Adapter-only baseline of configs/demo/seg_demo_segmenter.py (no token
# dispatch, so no rate loss and no distillation), trained the same way.
_base_ = ['./seg_demo_segmenter.py']
model = dict(backbone=dict(dispatch=None), dyt_loss=dict(distill=False))
