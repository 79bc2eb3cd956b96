"""A trained DyT model and its inputs, for the tools.

The model comes from the libraries' own inference APIs
(``mmseg.apis.init_model``, ``mmaction.apis.init_recognizer``,
``mmdet.apis.init_detector``); clips are read here, resized and cropped by
mmaction2's test transforms and normalised by the model's data
preprocessor.
"""
import os
import os.path as osp
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from torch import Tensor


def load_config(path: str, cfg_options: Optional[dict] = None) -> Config:
    """Read a config file (mmengine raises FileNotFoundError naming a
    missing one) and apply ``--cfg-options``."""
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def init_task_model(cfg: Config,
                    checkpoint: Optional[str] = None,
                    device: str = 'cpu') -> nn.Module:
    """Build ``cfg.model`` for inference with its library's API:
    ``mmseg.apis.init_model``, ``mmaction.apis.init_recognizer`` or
    ``mmdet.apis.init_detector``, by the config's ``default_scope``.

    SyncBN layers are reverted to BatchNorm (so that the model runs on a CPU
    and in one process). Without a checkpoint the weights are the random
    initialisation: the backbone's ``Pretrained`` ``init_cfg`` is not
    loaded.

    Args:
        cfg (Config): The model's config.
        checkpoint (str, optional): A checkpoint of the whole model.
            Defaults to None.
        device (str): Device to put the model on. Defaults to ``'cpu'``.

    Returns:
        nn.Module: The model in eval mode, with the config as ``model.cfg``.
    """
    scope = cfg.get('default_scope')
    if scope == 'mmaction':
        from mmaction.apis import init_recognizer
        model = init_recognizer(cfg, checkpoint, device=device)
    elif scope == 'mmdet':
        from mmdet.apis import init_detector
        model = init_detector(cfg, checkpoint, device=device)
    else:
        from mmseg.apis import init_model
        model = init_model(cfg, checkpoint, device=device)
    return revert_sync_batchnorm(model).eval()


#: Frames per clip of a video model whose config names no ``clip_len``
#: (the tools' ``--num-frames`` default): the 8-frame clips of the paper's
#: Kinetics-400 recipes.
DEFAULT_NUM_FRAMES = 8

#: File extensions read as videos.
VIDEO_EXTENSIONS = ('.mp4', '.avi', '.mkv', '.mov', '.webm', '.m4v')
#: File extensions of frames in a frame folder.
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp')


def clip_len_of(cfg: Config) -> Optional[int]:
    """Frames per clip: the ``clip_len`` of the test pipeline's frame
    sampler (``SampleFrames``, ``UniformSample``, ...), None without one."""
    dataloader = cfg.get('test_dataloader') or {}
    pipeline = (dataloader.get('dataset') or {}).get('pipeline') or \
        cfg.get('test_pipeline') or []
    for step in pipeline:
        if 'clip_len' in step:
            return int(step['clip_len'])
    return None


def _expects_bgr(preprocessor: nn.Module) -> bool:
    """Whether a data preprocessor flips BGR inputs to RGB."""
    return bool(
        getattr(preprocessor, 'to_rgb', False)
        or getattr(preprocessor, 'channel_conversion', False))


def read_frames(path: str, num_frames: int) -> List[np.ndarray]:
    """``num_frames`` RGB frames evenly spread over a video or frame folder.

    Args:
        path (str): A video file (read with ``mmcv.VideoReader``) or a folder
            of frame images (in file name order).
        num_frames (int): Frames to take.

    Raises:
        ValueError: If the video or folder has no frames.
    """
    import mmcv
    if osp.isdir(path):
        names = sorted(f for f in os.listdir(path)
                       if f.lower().endswith(IMAGE_EXTENSIONS))
        total = len(names)
    else:
        reader = mmcv.VideoReader(path)
        total = len(reader)
    if total == 0:
        raise ValueError(f'{path} has no frames')
    indices = np.linspace(0, total - 1, num_frames).round().astype(int)
    if osp.isdir(path):
        return [
            mmcv.imread(osp.join(path, names[i]), channel_order='rgb')
            for i in indices
        ]
    frames = []
    for i in indices:
        frame = reader.get_frame(int(i))
        if frame is None:
            raise ValueError(f'cannot read frame {i} of {path}')
        frames.append(mmcv.bgr2rgb(frame))
    return frames


def resize_crop_frames(frames: Sequence[np.ndarray],
                       size: Tuple[int, int]) -> List[np.ndarray]:
    """Resize frames to cover ``size`` (H, W), keeping their aspect ratio,
    and crop the centre, with mmaction2's own test transforms: ``Resize``
    to a short edge (``scale=(-1, short)``) and ``CenterCrop``, as the
    recipes' test pipelines do (``Resize(scale=(-1, 224))``,
    ``CenterCrop(crop_size=224)`` for ``size=(224, 224)``).

    Args:
        frames (Sequence[np.ndarray]): Frames of one shape (H, W, C).
        size (tuple[int, int]): The output height and width.

    Returns:
        list[np.ndarray]: The frames, ``size`` each.
    """
    from mmaction.datasets.transforms import CenterCrop, Resize
    height, width = frames[0].shape[:2]
    short = min(height, width)
    # the smallest short edge whose resize covers both sides (ceil division)
    edge = max(-(-size[0] * short // height), -(-size[1] * short // width))
    results = dict(imgs=list(frames), img_shape=(height, width),
                   modality='RGB')
    results = Resize(scale=(-1, edge))(results)
    results = CenterCrop(crop_size=(size[1], size[0]))(results)
    return results['imgs']


def clip_inputs(model: nn.Module, frames: Sequence[np.ndarray],
                size: Tuple[int, int]) -> Tuple[Tensor, List[np.ndarray]]:
    """Video frames as a normalised clip for the backbone.

    Each frame is resized and centre-cropped to ``size`` by mmaction2's
    test transforms (:func:`resize_crop_frames`); the clip is normalised by
    the model's data preprocessor (mmaction2's ``ActionDataPreprocessor``,
    ``NCTHW``).

    Args:
        model (nn.Module): An mmaction2 recognizer from :func:`init_model`.
        frames (Sequence[np.ndarray]): RGB frames (H, W, 3), uint8.
        size (tuple[int, int]): Frame size the backbone gets.

    Returns:
        tuple[Tensor, list[np.ndarray]]: The backbone input (1, C, T, H, W)
        and the RGB frames it shows.
    """
    from mmaction.structures import ActionDataSample
    shown = [np.ascontiguousarray(f) for f in resize_crop_frames(frames, size)]
    clip = np.stack(shown)  # T, H, W, C
    if _expects_bgr(model.data_preprocessor):
        clip = clip[..., ::-1]
    clip = torch.from_numpy(np.ascontiguousarray(clip)).permute(3, 0, 1, 2)
    data = dict(inputs=[clip[None]], data_samples=[ActionDataSample()])
    inputs = model.data_preprocessor(data, False)['inputs']
    return inputs.flatten(0, 1), shown


def pad_to_patches(inputs: Tensor, images: Sequence[np.ndarray],
                   patch_size: int) -> Tuple[Tensor, List[np.ndarray]]:
    """Zero-pad inputs and images at the bottom and right to multiples of
    the patch size (as mmseg's ``size_divisor`` does)."""
    height, width = inputs.shape[-2:]
    pad_h = -height % patch_size
    pad_w = -width % patch_size
    if not pad_h and not pad_w:
        return inputs, list(images)
    inputs = torch.nn.functional.pad(inputs, (0, pad_w, 0, pad_h))
    images = [
        np.pad(image, ((0, pad_h), (0, pad_w), (0, 0))) for image in images
    ]
    return inputs, images
