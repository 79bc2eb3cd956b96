"""Tiny configs, data and checkpoints for the efficiency tools' tests."""
import os
import os.path as osp

import cv2
import numpy as np
import torch

#: A small custom ViT arch that runs in milliseconds.
TINY = dict(embed_dims=32, num_layers=4, num_heads=2, feedforward_channels=64)

#: Name of the video test head in mmaction2's registry.
VIDEO_HEAD = 'MMDyTTestTupleI3DHead'


def register_tiny_video_head() -> str:
    """Register an ``I3DHead`` that takes DyTViT's tuple of outputs."""
    from mmaction.models.heads import I3DHead
    from mmaction.registry import MODELS

    class TupleI3DHead(I3DHead):

        def forward(self, x, **kwargs):
            if isinstance(x, (tuple, list)):
                x = x[-1]
            return super().forward(x, **kwargs)

    MODELS.register_module(name=VIDEO_HEAD, module=TupleI3DHead, force=True)
    return VIDEO_HEAD


SEG_CONFIG = """
custom_imports = dict(imports=['mmdyt'], allow_failed_imports=False)
default_scope = 'mmseg'
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    type='DyTEncoderDecoder',
    data_preprocessor=dict(
        type='SegDataPreProcessor', mean=[127.5] * 3, std=[127.5] * 3,
        bgr_to_rgb=True, size=(64, 64)),
    backbone=dict(
        type='DyTViT', arch={arch}, img_size=64, patch_size=8,
        out_indices=(0, 1, 2, 3), dispatch='mlp',
        adapter_cfg=dict(type='Adapter', bottleneck=8),
        init_cfg=dict(type='Pretrained', checkpoint='does/not/exist.pth')),
    neck=dict(type='Feature2Pyramid', embed_dim=32, rescales=[4, 2, 1, 0.5],
              norm_cfg=norm_cfg),
    decode_head=dict(type='UPerHead', in_channels=[32] * 4,
                     in_index=[0, 1, 2, 3], channels=16, num_classes=3,
                     norm_cfg=norm_cfg),
    auxiliary_head=dict(type='FCNHead', in_channels=32, in_index=2,
                        channels=8, num_convs=1, num_classes=3,
                        norm_cfg=norm_cfg),
    test_cfg=dict(mode='whole'))
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(64, 64), keep_ratio=False),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
test_dataloader = dict(
    batch_size=2, num_workers=1, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='BaseSegDataset', data_root={data_root!r},
        metainfo=dict(classes=('a', 'b', 'c')),
        data_prefix=dict(img_path='images/validation',
                         seg_map_path='annotations/validation'),
        img_suffix='.jpg', seg_map_suffix='.png', reduce_zero_label=True,
        pipeline=test_pipeline))
"""

VIDEO_CONFIG = """
custom_imports = dict(imports=['mmdyt'], allow_failed_imports=False)
default_scope = 'mmaction'
model = dict(
    type='Recognizer3D',
    data_preprocessor=dict(
        type='ActionDataPreprocessor', mean=[127.5] * 3, std=[127.5] * 3,
        format_shape='NCTHW'),
    backbone=dict(type='DyTViT', arch={arch}, img_size=32, patch_size=8,
                  dispatch='mlp'),
    cls_head=dict(type={head!r}, in_channels=32, num_classes=4))
test_pipeline = [
    dict(type='OpenCVInit'),
    dict(type='UniformSample', clip_len=3, num_clips=1, test_mode=True),
    dict(type='OpenCVDecode'),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs'),
]
"""


def write_seg_config(directory: str, data_root: str = 'no/such/data') -> str:
    """A tiny DyT UperNet config (ADE20K-style test set at ``data_root``)."""
    path = osp.join(directory, 'tiny_seg.py')
    with open(path, 'w') as file:
        file.write(SEG_CONFIG.format(arch=TINY, data_root=data_root))
    return path


def write_video_config(directory: str) -> str:
    """A tiny DyT video recognizer config (clips of 3 frames)."""
    register_tiny_video_head()
    path = osp.join(directory, 'tiny_video.py')
    with open(path, 'w') as file:
        file.write(VIDEO_CONFIG.format(arch=TINY, head=VIDEO_HEAD))
    return path


def make_seg_data(root: str, num_images: int = 3, size: int = 48) -> str:
    """A few random images and label maps in the ADE20K layout."""
    rng = np.random.RandomState(0)
    for kind, suffix in (('images', '.jpg'), ('annotations', '.png')):
        os.makedirs(osp.join(root, kind, 'validation'), exist_ok=True)
    for i in range(num_images):
        image = rng.randint(0, 255, (size, size, 3), dtype=np.uint8)
        label = rng.randint(1, 4, (size, size), dtype=np.uint8)
        cv2.imwrite(osp.join(root, 'images', 'validation', f'{i}.jpg'), image)
        cv2.imwrite(
            osp.join(root, 'annotations', 'validation', f'{i}.png'), label)
    return root


def make_video(path: str, num_frames: int = 10, size: int = 40) -> str:
    """An mp4 (OpenCV ``mp4v``) of a moving square."""
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'mp4v'), 10,
                             (size, size))
    for t in range(num_frames):
        frame = np.full((size, size, 3), 30, np.uint8)
        frame[10:20, 2 + 2 * t:12 + 2 * t] = (40, 200, 240)
        writer.write(frame)
    writer.release()
    return path


def save_model(model: torch.nn.Module, path: str) -> str:
    """Save ``model`` as a whole-model checkpoint."""
    torch.save({'state_dict': model.state_dict()}, path)
    return path
