# Adapter-only baseline (AdaptFormer-style, no token dispatch, so no rate
# loss) with the same recipe as configs/ade20k/dyt_vitb.py: every DyT number
# is compared with it.
_base_ = ['./dyt_vitb.py']
model = dict(backbone=dict(dispatch=None))
