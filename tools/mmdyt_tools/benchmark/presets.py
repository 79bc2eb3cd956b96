"""The named backbone settings of ``benchmark_backbone.py --preset``."""

#: Named benchmark settings: ViT-B/16 for image classification, the
#: segmentation backbone and 8-frame clips.
PRESETS = {
    'vit-b-224': dict(arch='base', img_size=224, num_frames=None,
                      batches=(1, 8, 32)),
    'vit-b-512': dict(arch='base', img_size=512, num_frames=None,
                      batches=(1, 2)),
    'vit-b-video': dict(arch='base', img_size=224, num_frames=8,
                        batches=(1, 2)),
    # the detection backbone: ViTDet-B at 1024 (windows of 14, global blocks
    # 2, 5, 8, 11, decomposed relative positions, no cls token); the dense
    # peer is timm's SAM ViT-B blocks, the same design
    'vitdet-b-1024': dict(arch='base', img_size=1024, num_frames=None,
                          batches=(1, ), vitdet=True),
    # the Swin-B of the ADE20K recipe (window 12) at 512; the dense peer is
    # mmseg's SwinTransformer (``swin_peers.py``)
    'swin-b-512': dict(arch='swin-b', img_size=512, num_frames=None,
                       batches=(1, 8), swin=True),
}

#: DyTViT options of ViTDet's backbone (the ``vitdet`` presets).
VITDET_OPTIONS = dict(with_cls_token=False, window_size=14,
                      global_attn_indexes=(2, 5, 8, 11), use_rel_pos=True)
