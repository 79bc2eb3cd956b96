"""A learnable segmentation dataset in the ADE20K layout.

Shapes (circle, square, triangle, cross) on textured backgrounds. Each kind
of shape has its own colour family (jittered), and backgrounds are striped
and noisy in random colours, so that a small ViT pre-trained for a minute
gives features that separate the classes. Annotations follow
ADE20K: 0 is "ignore" (``reduce_zero_label=True`` turns it into 255),
1 is the background and 2..5 the shapes.
"""
import os
import os.path as osp
from typing import Dict, Tuple

import cv2
import numpy as np

#: Class names after ``reduce_zero_label`` (annotation value - 1).
CLASSES = ('background', 'circle', 'square', 'triangle', 'cross')
PALETTE = [[120, 120, 120], [230, 25, 75], [60, 180, 75], [255, 225, 25],
           [0, 130, 200]]
#: Mean BGR colour of each shape kind; samples jitter it.
SHAPE_COLORS = [(60, 60, 220), (60, 190, 60), (40, 220, 230), (220, 120, 40)]
#: ADE20K-style split folders and default number of images.
SPLITS = {'training': 400, 'validation': 60}


def _background(rng: np.random.RandomState, size: int) -> np.ndarray:
    """A textured background: stripes, blobs and noise in random colours."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    freq = rng.uniform(0.1, 0.5)
    stripes = np.sin(freq * (np.cos(angle) * xx + np.sin(angle) * yy))
    c1, c2 = rng.uniform(0, 255, (2, 3))
    image = c1 + (c2 - c1) * (0.5 + 0.5 * stripes[..., None])
    image += rng.normal(0, 20, (size, size, 3))
    return image


def _draw_shape(canvas: np.ndarray, kind: int, center: Tuple[int, int],
                radius: int, angle: float, value) -> None:
    """Draw filled shape ``kind`` (index into CLASSES[1:]) on ``canvas``."""
    cx, cy = center
    if kind == 0:  # circle
        cv2.circle(canvas, (cx, cy), radius, value, -1)
        return
    if kind == 1:  # square
        corners = [(1, 1), (1, -1), (-1, -1), (-1, 1)]
        points = [(x * 0.8, y * 0.8) for x, y in corners]
    elif kind == 2:  # triangle, enlarged to an area close to the others'
        points = [(1.4 * np.cos(a), 1.4 * np.sin(a))
                  for a in np.deg2rad([90, 210, 330])]
    else:  # cross
        w, h = 0.35, 1.0  # half width and half length of an arm
        points = [(w, h), (w, w), (h, w), (h, -w), (w, -w), (w, -h),
                  (-w, -h), (-w, -w), (-h, -w), (-h, w), (-w, w), (-w, h)]
    rot = np.array([[np.cos(angle), -np.sin(angle)],
                    [np.sin(angle), np.cos(angle)]])
    polygon = (np.array(points) @ rot.T * radius + [cx, cy]).round()
    cv2.fillPoly(canvas, [polygon.astype(np.int32)], value)


def make_sample(rng: np.random.RandomState,
                size: int = 96) -> Tuple[np.ndarray, np.ndarray]:
    """One image (H, W, 3) uint8 BGR and its ADE20K-style label map."""
    image = _background(rng, size)
    label = np.ones((size, size), np.uint8)  # 1 = background
    for _ in range(rng.randint(1, 4)):
        kind = rng.randint(len(CLASSES) - 1)
        radius = rng.randint(size // 8, size // 4)
        center = tuple(int(v) for v in rng.randint(radius // 2,
                                                   size - radius // 2, 2))
        angle = rng.uniform(0, 2 * np.pi)
        color = tuple(
            float(np.clip(c + rng.uniform(-40, 40), 0, 255))
            for c in SHAPE_COLORS[kind])
        _draw_shape(image, kind, center, radius, angle, color)
        _draw_shape(label, kind, center, radius, angle, kind + 2)
    image = np.clip(image, 0, 255).astype(np.uint8)
    return image, label


def make_seg_demo(root: str,
                  splits: Dict[str, int] = SPLITS,
                  size: int = 96,
                  seed: int = 0) -> Dict[str, int]:
    """Write the dataset under ``root`` in the ADE20K layout.

    ``root/images/<split>/*.jpg`` and ``root/annotations/<split>/*.png``.
    Existing complete splits are kept (the call is cheap to repeat).

    Returns:
        dict: Number of images per split.
    """
    for index, (split, count) in enumerate(splits.items()):
        img_dir = osp.join(root, 'images', split)
        ann_dir = osp.join(root, 'annotations', split)
        if osp.isdir(ann_dir) and len(os.listdir(ann_dir)) == count:
            continue
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(ann_dir, exist_ok=True)
        rng = np.random.RandomState(seed + 1000 * index)
        for i in range(count):
            image, label = make_sample(rng, size)
            name = f'demo_{split}_{i:05d}'
            cv2.imwrite(osp.join(img_dir, name + '.jpg'), image,
                        [cv2.IMWRITE_JPEG_QUALITY, 95])
            cv2.imwrite(osp.join(ann_dir, name + '.png'), label)
    return dict(splits)
