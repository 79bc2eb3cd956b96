# Adapter-only twin of configs/ade20k/dyt_swinb_upernet.py: the same Swin-B
# with adapters at every FFN and no token dispatch (so no rate loss).
_base_ = ['./dyt_swinb_upernet.py']
model = dict(backbone=dict(dispatch=None))
