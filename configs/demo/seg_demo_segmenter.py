# The segmentation demo (configs/demo/seg_demo.py) with Segmenter's mask
# transformer (2 layers, mmseg's SegmenterMaskTransformerHead) as the
# decode head instead of the simple FPN + UperNet, as
# configs/ade20k/dyt_vitb_segmenter.py has it: the backbone's last map with
# the final LayerNorm, no neck, no auxiliary head.
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
    auxiliary_head=None)
