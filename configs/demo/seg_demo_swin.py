# DyT segmentation demo, Swin twin: the small demo Swin Transformer (mmseg's
# SwinTransformer, pre-trained by `tools/demo/pretrain_demo_vit.py --arch swin`),
# frozen and adapted with DyTSwinTransformer on the generated ADE20K-layout
# shapes dataset; UPerNet on its four stages. `make demo-swin` trains it and its
# adapter-only twin (seg_demo_swin_adapter.py). Structured like
# configs/ade20k/dyt_swinb_upernet.py; data and schedule are seg_demo.py's.
_base_ = ['./seg_demo.py']

pretrained = 'data/demo/demo_swin.pth'

model = dict(
    backbone=dict(
        _delete_=True,
        type='DyTSwinTransformer',
        # the demo Swin (tools/demo/demo_swin.py): strides 4, 8, 16, 32
        pretrain_img_size=96,
        embed_dims=32,
        depths=(2, 2, 2, 2),
        num_heads=(1, 2, 4, 8),
        window_size=6,
        drop_path_rate=0.1,
        out_indices=(0, 1, 2, 3),
        dispatch='mlp',
        adapter_cfg=dict(type='Adapter', bottleneck=16, scale=0.1),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=None,
    decode_head=dict(in_channels=[32, 64, 128, 256]),
    auxiliary_head=dict(in_channels=128))
