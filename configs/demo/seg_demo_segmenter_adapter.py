# Adapter-only baseline of configs/demo/seg_demo_segmenter.py (no token
# dispatch, so no rate loss), trained the same way.
_base_ = ['./seg_demo_segmenter.py']
model = dict(backbone=dict(dispatch=None))
