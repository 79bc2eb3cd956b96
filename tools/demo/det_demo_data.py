"""A learnable instance segmentation dataset in the COCO layout.

The segmentation demo's shapes (circle, square, triangle, cross) on the same
textured backgrounds, each shape an instance: ``annotations/instances_
{train,val}2017.json`` (boxes, areas and RLE masks, COCO's format, read by
mmdet's ``CocoDataset`` and scored by ``CocoMetric``) beside the
``train2017/`` and ``val2017/`` image folders. Later shapes occlude earlier
ones; an instance's mask is what stays visible of it.
"""
import json
import os
import os.path as osp
from typing import Dict, List, Tuple

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from seg_demo_data import CLASSES, SHAPE_COLORS, _background, _draw_shape

#: The instance classes (the segmentation demo's shapes).
THING_CLASSES = CLASSES[1:]
#: Split -> (folder, default number of images).
SPLITS = {'train': 300, 'val': 50}
#: Smallest visible area kept as an instance (pixels).
MIN_AREA = 20


def make_sample(rng: np.random.RandomState, size: int = 128
                ) -> Tuple[np.ndarray, List[dict]]:
    """One image (H, W, 3) uint8 BGR and its instances: ``category``
    (index into :data:`THING_CLASSES`) and ``mask`` (H, W) uint8."""
    image = _background(rng, size)
    shapes = []
    for _ in range(rng.randint(1, 5)):
        kind = rng.randint(len(THING_CLASSES))
        radius = rng.randint(size // 10, size // 5)
        center = tuple(int(v) for v in rng.randint(radius, size - radius, 2))
        angle = rng.uniform(0, 2 * np.pi)
        color = tuple(
            float(np.clip(c + rng.uniform(-40, 40), 0, 255))
            for c in SHAPE_COLORS[kind])
        _draw_shape(image, kind, center, radius, angle, color)
        mask = np.zeros((size, size), np.uint8)
        _draw_shape(mask, kind, center, radius, angle, 1)
        for earlier in shapes:  # this shape hides what it covers
            earlier['mask'][mask > 0] = 0
        shapes.append(dict(category=kind, mask=mask))
    image = np.clip(image, 0, 255).astype(np.uint8)
    return image, [s for s in shapes if s['mask'].sum() >= MIN_AREA]


def coco_annotation(mask: np.ndarray, category: int, image_id: int,
                    ann_id: int) -> dict:
    """A COCO instance annotation (RLE mask, xywh box) of a binary mask."""
    rle = mask_utils.encode(np.asfortranarray(mask))
    x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
    rle['counts'] = rle['counts'].decode('ascii')
    return dict(id=ann_id, image_id=image_id, category_id=category + 1,
                segmentation=rle, area=float(mask_utils.area(rle)),
                bbox=[x, y, w, h], iscrowd=0)


def make_det_demo(root: str,
                  splits: Dict[str, int] = SPLITS,
                  size: int = 128,
                  seed: int = 0) -> Dict[str, int]:
    """Write the dataset under ``root`` in the COCO layout.

    ``root/{train,val}2017/*.jpg`` and
    ``root/annotations/instances_{train,val}2017.json``. Existing complete
    splits are kept (the call is cheap to repeat).

    Returns:
        dict: Number of images per split.
    """
    categories = [dict(id=i + 1, name=name, supercategory='shape')
                  for i, name in enumerate(THING_CLASSES)]
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    for index, (split, count) in enumerate(splits.items()):
        folder = f'{split}2017'
        ann_file = osp.join(root, 'annotations', f'instances_{folder}.json')
        if osp.isfile(ann_file):
            with open(ann_file) as file:
                if len(json.load(file)['images']) == count:
                    continue
        os.makedirs(osp.join(root, folder), exist_ok=True)
        rng = np.random.RandomState(seed + 1000 * index)
        images, annotations = [], []
        for image_id in range(1, count + 1):
            image, instances = make_sample(rng, size)
            name = f'demo_{split}_{image_id:05d}.jpg'
            cv2.imwrite(osp.join(root, folder, name), image,
                        [cv2.IMWRITE_JPEG_QUALITY, 95])
            images.append(dict(id=image_id, file_name=name, height=size,
                               width=size))
            for instance in instances:
                annotations.append(
                    coco_annotation(instance['mask'], instance['category'],
                                    image_id, len(annotations) + 1))
        with open(ann_file, 'w') as file:
            json.dump(dict(images=images, annotations=annotations,
                           categories=categories), file)
    return dict(splits)
