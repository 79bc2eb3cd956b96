"""What the tests share: paths, small architectures, generated data and
checkpoints, running the tools and reading what they print."""
import glob
import importlib.util
import os
import os.path as osp
import subprocess
import sys
from typing import Optional
from unittest import mock

import cv2
import numpy as np
import pytest
import torch

from mmdyt.utils.torch_compat import TORCH_FEATURES, torch_at_least

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
#: The tool folders; ``conftest`` puts them on ``sys.path`` so that the
#: tests import the tools' scripts (``import pytorch2onnx``) and the tools'
#: library ``mmdyt_tools`` (``tools/mmdyt_tools``, which ``pip install -e .``
#: installs; from ``tools/`` also in an environment installed before it
#: existed). Only the tests touch ``sys.path``: the tools import
#: ``mmdyt_tools`` as an installed package.
TOOL_DIRS = [osp.join(REPO_ROOT, 'tools')] + [
    osp.join(REPO_ROOT, 'tools', sub)
    for sub in ('analysis_tools', 'model_converters', 'demo', 'deployment',
                'misc')
]

#: A small custom ViT arch that runs in milliseconds.
TINY = dict(embed_dims=32, num_layers=4, num_heads=2, feedforward_channels=64)
#: The same, 12 blocks deep: fits recipes whose out_indices reach block 11.
TINY_12 = dict(TINY, num_layers=12)


def requires_torch_for(feature: str):
    """Skip a test where ``feature`` (a key of ``TORCH_FEATURES``) needs a
    newer torch than the installed one, naming both in the reason."""
    version = TORCH_FEATURES[feature]
    return pytest.mark.skipif(
        not torch_at_least(version),
        reason=f'{feature} needs torch >= {version}; this is torch '
        f'{torch.__version__}')


def config_path(name: str) -> str:
    """``configs/<name>`` of the repository."""
    return osp.join(REPO_ROOT, 'configs', name)


def cfg_options(options: Optional[dict]) -> list:
    """``--cfg-options`` arguments for a dict of overrides."""
    if not options:
        return []
    return ['--cfg-options', *(f'{k}={v}' for k, v in options.items())]


def run_tool(tool: str, *args, options: Optional[dict] = None,
             check: bool = True, env: Optional[dict] = None
             ) -> subprocess.CompletedProcess:
    """Run ``tools/<tool>`` (e.g. ``'train.py'``) in a fresh interpreter.

    Returns:
        CompletedProcess: With ``output``: stderr and stdout joined (the
        log first, the printed summary last).
    """
    command = [sys.executable, osp.join(REPO_ROOT, 'tools', tool), *args,
               *cfg_options(options)]
    result = subprocess.run(command, capture_output=True, text=True,
                            cwd=REPO_ROOT, env=env)
    result.output = result.stderr + result.stdout
    if check:
        assert result.returncode == 0, result.output[-4000:]
    return result


def load_tool(tool: str):
    """Import ``tools/<tool>`` as a module (its ``main`` not run)."""
    path = osp.join(REPO_ROOT, 'tools', tool)
    name = 'tool_' + osp.splitext(tool)[0].replace('/', '_')
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_tool_here(tool: str, *args, options: Optional[dict] = None,
                  module=None):
    """Run the ``main()`` of ``tools/<tool>`` in this process (no
    interpreter start-up); returns what it returns.

    Args:
        module: The tool, already loaded (:func:`load_tool`), e.g. with a
            function replaced. Defaults to loading it.
    """
    module = module or load_tool(tool)
    argv = [tool, *args, *cfg_options(options)]
    with mock.patch.object(sys, 'argv', argv):
        return module.main()


def work_dir_log(work_dir: str) -> str:
    """The text of the newest mmengine log in ``work_dir``."""
    logs = sorted(glob.glob(osp.join(str(work_dir), '*', '*.log')),
                  key=osp.getmtime)
    assert logs, f'no log in {work_dir}'
    with open(logs[-1]) as file:
        return file.read()


def parse_metrics(output: str) -> dict:
    """The metrics of ``tools/test.py``'s summary (the last one printed)."""
    summary = output[output.rindex('=== test results ==='):].splitlines()[1:]
    return {
        name: float(value)
        for name, value in (line.split(': ', 1) for line in summary
                            if ': ' in line and ' ' not in line.split(':')[0])
    }


def save_timm_vit(path: str, model_name: str = 'vit_base_patch16_224',
                  **kwargs) -> torch.nn.Module:
    """Save a randomly initialised timm ViT's state dict to ``path``."""
    import timm
    model = timm.create_model(model_name, pretrained=False, **kwargs).eval()
    torch.save(model.state_dict(), path)
    return model


def seg_demo_env(root, training: int = 4, validation: int = 2) -> dict:
    """Generate a small demo segmentation dataset and a random demo ViT
    checkpoint under ``root``; return the ``--cfg-options`` that point
    ``configs/demo/seg_demo.py`` at them, with in-process data loading."""
    from demo_vit import build_demo_vit
    from seg_demo_data import make_seg_demo
    data = str(root / 'seg')
    make_seg_demo(data, splits=dict(training=training, validation=validation))
    torch.manual_seed(0)
    torch.save(build_demo_vit().state_dict(), root / 'vit.pth')
    options = {'model.backbone.init_cfg.checkpoint': str(root / 'vit.pth')}
    for split in ('train', 'val', 'test'):
        options.update({
            f'{split}_dataloader.dataset.data_root': data,
            f'{split}_dataloader.num_workers': 0,
            f'{split}_dataloader.persistent_workers': False,
        })
    return options


def det_demo_env(root, train: int = 4, val: int = 2, size: int = 128) -> dict:
    """Generate a small COCO-format detection dataset (``size`` x ``size``
    images) and a random demo ViT checkpoint under ``root``; return the
    ``--cfg-options`` that point ``configs/demo/det_demo.py`` (or a COCO
    recipe) at them, with in-process data loading."""
    from demo_vit import build_demo_vit
    from det_demo_data import make_det_demo
    data = str(root / 'det') + '/'
    make_det_demo(data, splits=dict(train=train, val=val), size=size)
    torch.manual_seed(0)
    torch.save(build_demo_vit().state_dict(), root / 'vit.pth')
    ann_file = 'annotations/instances_{}2017.json'
    options = {
        'model.backbone.init_cfg.checkpoint': str(root / 'vit.pth'),
        'val_evaluator.ann_file': data + ann_file.format('val'),
        'test_evaluator.ann_file': data + ann_file.format('val'),
    }
    for split in ('train', 'val', 'test'):
        folder = 'train' if split == 'train' else 'val'
        options.update({
            f'{split}_dataloader.dataset.data_root': data,
            f'{split}_dataloader.dataset.ann_file': ann_file.format(folder),
            f'{split}_dataloader.dataset.data_prefix.img': f'{folder}2017/',
            f'{split}_dataloader.num_workers': 0,
            f'{split}_dataloader.persistent_workers': False,
        })
    return options


def shrink_seg_recipe(cfg, size: int = 64, arch: dict = TINY_12,
                      channels: int = 16) -> None:
    """Make a ViT-B segmentation recipe tiny, in place, keeping its
    structure (blocks read, neck, heads, test mode): the backbone becomes
    ``arch`` (12 blocks, so the recipe's ``out_indices`` stay), the heads
    ``channels`` wide, the input ``size`` (training crops and the sliding
    window's crops, which must have the backbone's size when it has a
    relative position bias); no checkpoint is loaded."""
    dims = arch['embed_dims']
    model = cfg.model
    model.backbone.update(arch=dict(arch), img_size=size, init_cfg=None)
    model.backbone.pop('pretrained', None)
    if model.backbone.get('adapter_cfg'):
        model.backbone.adapter_cfg.bottleneck = 8
    model.data_preprocessor.size = (size, size)
    if model.get('neck') and 'embed_dim' in model.neck:
        model.neck.embed_dim = dims
    head = model.decode_head
    if 'embed_dims' in head:  # Segmenter's mask transformer: one map
        head.update(in_channels=dims, channels=dims, embed_dims=dims,
                    num_heads=2)
    else:
        head.update(in_channels=[dims] * len(head.in_channels),
                    channels=channels)
    if model.get('auxiliary_head'):
        model.auxiliary_head.update(in_channels=dims, channels=channels)
    if model.test_cfg.get('mode') == 'slide':
        model.test_cfg.update(crop_size=(size, size),
                              stride=(size * 2 // 3, size * 2 // 3))


def tiny_dyt_vit(**kwargs):
    """A DyTViT of the :data:`TINY` arch, 32x32 inputs, patch 8."""
    from mmdyt.models import DyTViT
    args = dict(arch=dict(TINY), img_size=32, patch_size=8)
    args.update(kwargs)
    return DyTViT(**args)


def fixed_decisions(tokens, mask: torch.Tensor) -> torch.Tensor:
    """What a stand-in dispatcher returns for ``tokens``: ``mask`` (the
    decisions of the dispatched tokens), after zeros for the prefix tokens
    when it is given every token (the block does so in evaluation and must
    override the prefix's decisions)."""
    extra = 0 if tokens is None else tokens.shape[1] - mask.shape[1]
    if not extra:
        return mask
    return torch.cat([mask.new_zeros(mask.shape[0], extra), mask], dim=1)


def tensors_equal(a, b, path: str = '') -> None:
    """Assert two nested dicts/lists of tensors and values are identical."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            tensors_equal(a[key], b[key], f'{path}.{key}')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            tensors_equal(x, y, f'{path}[{i}]')
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    else:
        assert a == b, path


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
    """Save ``model`` as a whole-model checkpoint (as mmengine writes one:
    with ``meta``, which ``mmseg.apis.init_model`` reads)."""
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, path)
    return path


def train_and_test_step(model, data, test_data=None, lr: float = 1e-3):
    """One ``train_step`` (AdamW on the trainable parameters) on ``data``,
    then one ``test_step`` on ``test_data`` (default: ``data``); returns
    the logged losses and the predictions."""
    from mmengine.optim import OptimWrapper
    optim = OptimWrapper(torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=lr))
    model.train()
    log_vars = model.train_step(data, optim)
    model.eval()
    with torch.no_grad():
        predictions = model.test_step(test_data or data)
    return log_vars, predictions
