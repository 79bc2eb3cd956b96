# Adapter-only baseline (no token dispatch, so no rate loss) of
# configs/ade20k/dyt_vitb_segmenter.py: the same Segmenter head and recipe.
_base_ = ['./dyt_vitb_segmenter.py']
model = dict(backbone=dict(dispatch=None))
