"""What DyT did for each predicted sample: its activation rate and, on
request, its dispatch masks, attached to the library's data samples."""
from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor


def predict_with_dispatch(backbone: nn.Module,
                          predict: Callable[[], list],
                          return_masks: bool = False,
                          row_samples: Optional[Sequence[int]] = None
                          ) -> list:
    """Run ``predict()`` (a task model's prediction, returning one data
    sample per input) and record, in each data sample, what the DyTViT
    ``backbone`` did for that input.

    Every backbone forward of the prediction counts (all crops of a
    sliding-window test, all views of a multi-view test, chunks of
    ``max_testing_views``). The rows of each forward's masks are split
    evenly over the samples, in order: one row per sample for images, views
    x frames rows per clip for videos. A prediction that batches its
    forwards otherwise (a batched sliding window) says instead which sample
    every row belongs to (``row_samples``).

    Each data sample gets the metainfo ``act_rate`` (the mean over the
    dispatchers of the share of its tokens that were computed, as
    :func:`~mmdyt.models.layers.dispatcher.mean_rate` measures it) and
    ``dispatch_grid`` (the patch grid of the backbone input); with
    ``return_masks``, also the data field ``dispatch_masks``: a bool tensor
    (rows, dispatchers, tokens) with the sample's rows of every forward
    (patch tokens on ``dispatch_grid``, or one entry per row for
    ``'layer'`` dispatch), dispatchers in ``backbone.dispatch_sites``
    order. A hierarchical backbone's (Swin's) later stages have coarser
    grids: their masks are shown on the first stage's grid
    (:func:`expand_to_grid`); the rate is measured on the masks as they
    are.

    Args:
        backbone (DyTViT): The backbone ``predict`` runs.
        predict (Callable): The prediction, without arguments.
        return_masks (bool): Attach the masks too. Defaults to False.
        row_samples (Sequence[int], optional): The sample index of every row
            of every forward, in order; read after ``predict()`` returns
            (so ``predict`` may fill it). None or empty: each forward's rows
            are split evenly over the samples. Defaults to None.

    Returns:
        list: ``predict()``'s data samples.
    """
    if not backbone.dispatch_sites:
        return predict()
    forwards: List[Sequence[Tensor]] = []
    grids = []

    def record(masks, inputs):
        forwards.append([m.detach() for m in masks])
        # the patch grid, with a partial patch padded (mmseg's Swin does)
        grids.append(tuple(-(-s // backbone.patch_size)
                           for s in inputs.shape[-2:]))

    handle = backbone.register_mask_hook(record)
    try:
        samples = predict()
    finally:
        handle.remove()
    if not forwards or not samples:
        return samples
    num = len(samples)
    hierarchical = len({m.shape[1:] for masks in forwards for m in masks}) > 1
    if hierarchical:
        # a hierarchical backbone (Swin): each stage's masks have their own
        # token grid, so the rates are measured on the masks as they are
        samples = _record_rates(samples, forwards, row_samples, grids[0])
        if not return_masks:
            return samples
        # and the masks are shown on the first stage's grid
        strides = backbone.dispatch_site_strides
        forwards = [expand_to_grid(masks, strides, grid)
                    for masks, grid in zip(forwards, grids)]
    per_sample: List[List[Tensor]] = [[] for _ in range(num)]
    stacked = [torch.stack(masks, dim=1)  # rows, dispatchers, tokens
               for masks in forwards]
    if row_samples:
        rows = torch.cat(stacked)
        owners = torch.as_tensor(list(row_samples), device=rows.device)
        if owners.numel() != rows.shape[0]:
            raise ValueError(
                f'row_samples names {owners.numel()} rows, the forwards ran '
                f'{rows.shape[0]}')
        for index in range(num):
            per_sample[index].append(rows[owners == index])
    else:
        for masks in stacked:
            if masks.shape[0] % num:
                raise ValueError(
                    f'cannot attribute a forward of {masks.shape[0]} rows '
                    f'to {num} samples')
            for index, rows in enumerate(masks.chunk(num, dim=0)):
                per_sample[index].append(rows)
    for sample, rows in zip(samples, per_sample):
        masks = torch.cat(rows).bool()
        if not hierarchical:
            rate = masks.float().mean(dim=(0, 2)).mean()
            sample.set_metainfo(dict(act_rate=float(rate),
                                     dispatch_grid=grids[0]))
        if return_masks:
            sample.set_field(masks, 'dispatch_masks', field_type='data')
    return samples


def expand_to_grid(masks: Sequence[Tensor], strides: Sequence[int],
                   grid: Tuple[int, int]) -> List[Tensor]:
    """Masks of coarser token grids shown on the first one's.

    A site of stride ``s`` has its tokens on a ``ceil(grid / s)`` grid (the
    partial cells padded, as Swin's patch merging pads); each token's
    decision is repeated over the ``s x s`` first-grid tokens it covers.

    Args:
        masks (Sequence[Tensor]): One (rows, tokens) mask per site.
        strides (Sequence[int]): Every site's stride over ``grid``
            (``backbone.dispatch_site_strides``).
        grid (tuple): The first grid (H, W).

    Returns:
        list[Tensor]: (rows, H * W) masks.
    """
    expanded = []
    for site, (mask, stride) in enumerate(zip(masks, strides)):
        height, width = (-(-size // stride) for size in grid)
        if mask.shape[1] != height * width:
            raise ValueError(
                f'dispatch site {site}: {mask.shape[1]} tokens, not the '
                f'{height}x{width} grid of stride {stride} over {grid}')
        cells = mask.reshape(-1, height, width)
        cells = cells.repeat_interleave(stride, 1).repeat_interleave(
            stride, 2)
        expanded.append(cells[:, :grid[0], :grid[1]].flatten(1))
    return expanded


def _record_rates(samples: list, forwards: List[Sequence[Tensor]],
                  row_samples: Optional[Sequence[int]],
                  grid: Tuple[int, int]) -> list:
    """Set ``act_rate`` (and ``dispatch_grid``) of every sample from masks
    of different sizes: per dispatcher the share of the sample's tokens it
    computed, over all the sample's rows, then the mean over dispatchers."""
    num = len(samples)
    owners = None
    if row_samples:
        owners = torch.as_tensor(list(row_samples))
    sums = torch.zeros(num, len(forwards[0]), dtype=torch.float64)
    counts = torch.zeros_like(sums)
    start = 0
    for masks in forwards:
        rows = masks[0].shape[0]
        if owners is not None:
            owner = owners[start:start + rows]
        else:
            if rows % num:
                raise ValueError(f'cannot attribute a forward of {rows} '
                                 f'rows to {num} samples')
            owner = torch.arange(num).repeat_interleave(rows // num)
        for site, mask in enumerate(masks):
            flat = mask.detach().float().flatten(1).cpu()
            sums[:, site].index_add_(0, owner, flat.sum(1).double())
            counts[:, site].index_add_(
                0, owner, torch.full((rows, ), float(flat.shape[1]),
                                     dtype=torch.float64))
        start += rows
    rates = (sums / counts).mean(dim=1)
    for sample, rate in zip(samples, rates):
        sample.set_metainfo(dict(act_rate=float(rate), dispatch_grid=grid))
    return samples
