"""A learnable video dataset in mmaction2's ``VideoDataset`` layout.

In each clip two shapes of different kinds (circle, square, triangle, cross,
drawn as in ``seg_demo_data.py``) cross a static textured background
one after the other, each during half of the clip; the class is the pair of
kinds. Every kind belongs to two of the four pairs and every frame shows one
shape, so a single frame leaves two classes possible (at best 50% accuracy
from one frame, 25% is chance): the model must gather the shapes of several
frames, as DyT's video head does by pooling the tokens of all frames.

Why not classes defined by the motion itself, such as its direction: DyT's
video model (the paper's) sees no frame order (per-frame ViT, no temporal
embedding, a set pooling head), so a clip and its time reversal (left and
right) look the same to it; and the small demo ViT's tokens hardly encode
their position (a linear probe of its last block's tokens recovers their
patch row and column barely better than chance), so it can hardly tell
where a shape is.

Layout (``root`` is e.g. ``data/demo/video``)::

    root/train/clip_00000.mp4 ...   root/train.txt   ("clip_00000.mp4 2")
    root/val/clip_00000.mp4 ...     root/val.txt

Clips are written by OpenCV (``mp4v``), so they decode with OpenCV
(``mmcv.VideoReader``, mmaction2's ``OpenCVInit``) and with decord.
"""
import os
import os.path as osp
from typing import Dict, List

import cv2
import numpy as np

from seg_demo_data import SHAPE_COLORS, _background, _draw_shape

#: Class names, in label order: the two kinds of shape that pass by.
CLASSES = ('circle+square', 'triangle+cross', 'circle+triangle',
           'square+cross')
#: The kinds (indices into ``SHAPE_COLORS``) of each class.
PAIRS = ((0, 1), (2, 3), (0, 2), (1, 3))
#: Unit (dx, dy) image-coordinate directions a shape can cross the frame in.
DIRECTIONS = ((-1, 0), (1, 0), (0, -1), (0, 1))
#: Default number of clips per split.
SPLITS = {'train': 200, 'val': 40}


def _crossing(rng: np.random.RandomState, kind: int, size: int) -> dict:
    """A shape of ``kind`` and its straight path across a ``size`` frame."""
    radius = rng.uniform(0.12, 0.2) * size
    dx, dy = DIRECTIONS[rng.randint(len(DIRECTIONS))]
    start, end = 0.5 * radius, size - 0.5 * radius  # the centre's path
    if dx + dy < 0:
        start, end = end, start
    return dict(
        kind=kind,
        radius=int(round(radius)),
        angle=rng.uniform(0, 2 * np.pi),
        color=tuple(
            float(np.clip(c + rng.uniform(-40, 40), 0, 255))
            for c in SHAPE_COLORS[kind]),
        horizontal=bool(dx),
        across=rng.uniform(radius, size - radius),
        path=(start, end))


def make_clip(rng: np.random.RandomState, label: int, size: int = 64,
              num_frames: int = 24) -> List[np.ndarray]:
    """Frames (H, W, 3) uint8 BGR of one clip of class ``label``.

    The two shapes of ``PAIRS[label]``, in random order, each cross the frame
    from one border to the opposite one (one of four directions) during half
    of the clip.

    Args:
        rng (np.random.RandomState): Source of randomness.
        label (int): Index into :data:`CLASSES`.
        size (int): Frame height and width. Defaults to 64.
        num_frames (int): Number of frames, at least 2. Defaults to 24.
    """
    if label not in range(len(CLASSES)):
        raise ValueError(f'label must be in 0..{len(CLASSES) - 1}, '
                         f'got {label!r}')
    if num_frames < 2:
        raise ValueError(f'num_frames must be >= 2, got {num_frames!r}')
    background = _background(rng, size)
    shapes = [_crossing(rng, kind, size) for kind in rng.permutation(
        PAIRS[label])]
    share = num_frames / len(shapes)  # frames per shape
    frames = []
    for t in range(num_frames):
        frame = background + rng.normal(0, 4, background.shape)  # noise
        shape = shapes[min(int(t // share), len(shapes) - 1)]
        progress = (t % share + 0.5) / share  # of this shape's crossing
        start, end = shape['path']
        along = start + (end - start) * progress
        center = (along, shape['across']) if shape['horizontal'] else \
            (shape['across'], along)
        _draw_shape(frame, shape['kind'],
                    tuple(int(round(c)) for c in center), shape['radius'],
                    shape['angle'], shape['color'])
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return frames


def write_clip(path: str, frames: List[np.ndarray], fps: int = 8) -> None:
    """Write BGR ``frames`` to ``path`` as an mp4 (OpenCV, ``mp4v``)."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'mp4v'), fps,
                             (width, height))
    if not writer.isOpened():
        raise RuntimeError(f'OpenCV cannot write {path} with the mp4v codec')
    for frame in frames:
        writer.write(frame)
    writer.release()


def _is_complete(root: str, split: str, count: int) -> bool:
    """Whether ``split``'s list exists, has ``count`` lines and its clips."""
    ann_file = osp.join(root, f'{split}.txt')
    if not osp.isfile(ann_file):
        return False
    with open(ann_file) as f:
        names = [line.split()[0] for line in f if line.strip()]
    return len(names) == count and all(
        osp.isfile(osp.join(root, split, name)) for name in names)


def make_video_demo(root: str,
                    seed: int = 0,
                    splits: Dict[str, int] = SPLITS,
                    size: int = 64,
                    num_frames: int = 24) -> Dict[str, int]:
    """Write the dataset under ``root`` (see the module docstring).

    Complete splits are kept, so repeating the call costs nothing; a list file
    is written after its clips, so an interrupted split is regenerated.

    Args:
        root (str): Output folder.
        seed (int): Random seed. Defaults to 0.
        splits (dict): Number of clips per split (classes alternate, so they
            are balanced). Defaults to :data:`SPLITS`.
        size (int): Frame height and width. Defaults to 64.
        num_frames (int): Frames per clip. Defaults to 24.

    Returns:
        dict: Number of clips per split.
    """
    for index, (split, count) in enumerate(splits.items()):
        if _is_complete(root, split, count):
            continue
        ann_file = osp.join(root, f'{split}.txt')
        if osp.exists(ann_file):
            os.remove(ann_file)  # complete again only once rewritten
        os.makedirs(osp.join(root, split), exist_ok=True)
        rng = np.random.RandomState(seed + 1000 * index)
        lines = []
        for i in range(count):
            label = i % len(CLASSES)
            name = f'clip_{i:05d}.mp4'
            write_clip(
                osp.join(root, split, name),
                make_clip(rng, label, size=size, num_frames=num_frames))
            lines.append(f'{name} {label}\n')
        with open(ann_file, 'w') as f:
            f.writelines(lines)
    return dict(splits)
