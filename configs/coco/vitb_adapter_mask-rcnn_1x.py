# Adapter-only baseline (AdaptFormer-style, no token dispatch, so no rate
# loss) with the same recipe as configs/coco/dyt_vitb_mask-rcnn_1x.py
# (the paper's Table 11 AdaptFormer row: box / mask mAP 38.71 / 35.27).
_base_ = ['./dyt_vitb_mask-rcnn_1x.py']
model = dict(backbone=dict(dispatch=None))
