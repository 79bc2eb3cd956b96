# The segmentation demo (configs/demo/seg_demo.py) with Segmenter's mask
# transformer (2 layers, mmseg's SegmenterMaskTransformerHead) as the
# decode head instead of the simple FPN + UperNet, as
# configs/ade20k/dyt_vitb_segmenter.py has it: the backbone's last map with
# the final LayerNorm, no neck, no auxiliary head. Trained longer (1000
# iterations) and with complete-model distillation: the light head reads
# only the last block, where skipped tokens carry just the adapter's update.
_base_ = ['./seg_demo.py']
model = dict(
    backbone=dict(out_indices=(5, ), final_norm=True),
    neck=None,
    decode_head=dict(
        _delete_=True,
        type='SegmenterMaskTransformerHead',
        in_channels=128,
        channels=128,
        num_classes=5,
        num_layers=2,
        num_heads=4,
        embed_dims=128,
        dropout_ratio=0.0,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=None,
    dyt_loss=dict(distill=True))
max_iters = 1000
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0,
         end=50),
    dict(type='PolyLR', power=1.0, eta_min=0., by_epoch=False, begin=50,
         end=max_iters)
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
