"""Sliding-window inference that runs the crops of a batch K at a time.

mmseg's ``EncoderDecoder.slide_inference`` calls the model once per crop
position, on the whole batch: with a test batch of one image (the ADE20K and
COCO-Stuff recipes) every crop is a forward of batch 1, where a ViT's
matmuls run least efficiently and DyT's least of all (a matmul's cost at few
rows is not proportional to them). :func:`batched_slide_inference` cuts the
same crops and adds their logits up in the same order, but sends them
through the backbone, neck and head ``crop_batch`` at a time.
"""
from typing import Callable, List, Optional, Tuple

import torch
from torch import Tensor

#: Pixels per forward of the default crop batch (``crop_batch=None``): 8
#: crops of 512 x 512, i.e. every crop of one 512 x 2048 ADE20K image (6)
#: in one forward.
AUTO_CROP_PIXELS = 8 * 512 * 512


def check_crop_batch(crop_batch: Optional[int]) -> Optional[int]:
    """Return ``crop_batch`` if it is None or a positive int, else raise a
    ValueError naming the allowed values."""
    if crop_batch is None or (isinstance(crop_batch, int)
                              and not isinstance(crop_batch, bool)
                              and crop_batch >= 1):
        return crop_batch
    raise ValueError(
        "test_cfg's crop_batch must be a positive int (crops per forward; 1 "
        'is mmseg\'s crop-by-crop inference) or None (all crops of the '
        f'batch, up to {AUTO_CROP_PIXELS} pixels per forward), got '
        f'{crop_batch!r}')


def crop_windows(img_size: Tuple[int, int], crop_size: Tuple[int, int],
                 stride: Tuple[int, int]) -> List[Tuple[int, int, int, int]]:
    """The crops ``(y1, y2, x1, x2)`` of mmseg's sliding window, in its
    order (rows of crops top to bottom, each left to right).

    Args:
        img_size (tuple[int, int]): Height and width of the (padded) batch.
        crop_size (tuple[int, int]): ``test_cfg.crop_size``.
        stride (tuple[int, int]): ``test_cfg.stride``.
    """
    (h_img, w_img), (h_crop, w_crop), (h_stride, w_stride) = \
        img_size, crop_size, stride
    h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
    windows = []
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y2 = min(h_idx * h_stride + h_crop, h_img)
            x2 = min(w_idx * w_stride + w_crop, w_img)
            windows.append((max(y2 - h_crop, 0), y2, max(x2 - w_crop, 0), x2))
    return windows


def resolve_crop_batch(crop_batch: Optional[int], num_crops: int,
                       crop_size: Tuple[int, int]) -> int:
    """Crops per forward: ``crop_batch``, or for None all ``num_crops``
    up to :data:`AUTO_CROP_PIXELS` pixels; never more than ``num_crops``."""
    if crop_batch is None:
        crop_batch = max(1, AUTO_CROP_PIXELS // (crop_size[0] * crop_size[1]))
    return max(1, min(crop_batch, num_crops))


def batched_slide_inference(encode_decode: Callable[[Tensor, List[dict]],
                                                    Tensor],
                            inputs: Tensor,
                            batch_img_metas: List[dict],
                            num_classes: int,
                            crop_size: Tuple[int, int],
                            stride: Tuple[int, int],
                            crop_batch: int,
                            row_samples: Optional[List[int]] = None
                            ) -> Tensor:
    """mmseg's sliding-window inference, ``crop_batch`` crops per forward.

    The crops are those of mmseg's ``slide_inference``, taken crop position
    by crop position and, within one, image by image (the order in which
    mmseg's forwards see them), and every crop's logits are added into its
    window in that order, so that the result equals mmseg's up to the
    rounding of the batched matmuls. As mmseg does, the first image's
    ``img_shape`` metainfo is set to the crop's shape.

    Args:
        encode_decode (Callable): The segmentor's ``encode_decode(crops,
            metas)``: logits (n, num_classes, h, w) of n crops.
        inputs (Tensor): The batch (N, C, H, W).
        batch_img_metas (list[dict]): Its metainfo, one dict per image.
        num_classes (int): Channels of the logits.
        crop_size (tuple[int, int]): Crop height and width.
        stride (tuple[int, int]): Vertical and horizontal stride.
        crop_batch (int): Crops per forward, >= 1.
        row_samples (list[int], optional): If given, the image index of every
            crop sent through the model is appended to it, in order: which
            sample each row of the backbone's forwards belongs to.

    Returns:
        Tensor: The logits of the batch (N, num_classes, H, W), each pixel
        the mean over the crops that cover it.
    """
    batch, _, height, width = inputs.shape
    windows = crop_windows((height, width), crop_size, stride)
    crops = torch.cat([inputs[:, :, y1:y2, x1:x2]
                       for y1, y2, x1, x2 in windows])
    batch_img_metas[0]['img_shape'] = crops.shape[2:]
    preds = inputs.new_zeros((batch, num_classes, height, width))
    count = inputs.new_zeros((1, 1, height, width))
    for y1, y2, x1, x2 in windows:
        count[:, :, y1:y2, x1:x2] += 1
    for start in range(0, crops.shape[0], crop_batch):
        rows = range(start, min(start + crop_batch, crops.shape[0]))
        logits = encode_decode(crops[rows.start:rows.stop],
                               [batch_img_metas[0]] * len(rows))
        for logit, row in zip(logits, rows):
            position, sample = divmod(row, batch)
            y1, y2, x1, x2 = windows[position]
            preds[sample, :, y1:y2, x1:x2] += logit
        if row_samples is not None:
            row_samples.extend(row % batch for row in rows)
    assert bool((count > 0).all()), 'a pixel is covered by no crop'
    # in place: a second (N, classes, H, W) buffer costs more than the
    # division (the same quotients as mmseg's ``preds / count_mat``)
    return preds.div_(count)
