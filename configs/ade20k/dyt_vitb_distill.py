# configs/ade20k/dyt_vitb.py plus complete-model distillation: the complete
# model (same weights, every token active) adds its decode loss and teaches
# the dynamic model through a per-pixel KL of the decode head's logits. The
# paper does not distil for segmentation; this is mmdyt's option.
_base_ = ['./dyt_vitb.py']
model = dict(dyt_loss=dict(distill=True, distill_weight=1.0,
                           complete_weight=1.0))
