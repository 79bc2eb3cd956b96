"""An analytic FLOPs model of DyT backbones at given activation rates.

:func:`backbone_flops` counts any DyT backbone, dispatching on its type to
:func:`dyt_vit_flops` (:class:`DyTViT`) or :func:`dyt_swin_flops`
(:class:`DyTSwinTransformer`).

FLOPs are counted as multiply-accumulates, the convention of fvcore and
mmengine's counter that the paper's numbers use (ViT-B/16 at 224: 17.58 G),
and with the same rules as those counters, so that the model agrees with them
exactly on a traced forward (``tests/test_flops.py``). It reads the
structure of the blocks (their dispatch sites and adapters), never runs
them:

- linear layers, convolutions and the attention matmuls (``q k^T`` and the
  weighted sum): one FLOP per multiply-accumulate, biases free;
- LayerNorm: 5 FLOPs per element (fvcore's estimate for an affine norm);
- activations, softmax, additions and the mask comparisons: free (so is a
  BEiT relative position bias, a gathered table added to the attention
  logits);
- ViTDet's attention (windows, decomposed relative positions): the qkv and
  output projections run on the grid padded to a multiple of the window,
  attention inside each window; the decomposed bias costs its two einsums
  (``q`` against the height and the width tables), as ViTDet computes it.

Adapters, MoE routers (and their weight merging) and dispatchers are counted
on the tokens they see. Only the tokens a DyT block really computes are
counted: at an activation rate ``r`` the MLP (and its LayerNorm) of a
``'mlp'``-dispatched block sees ``prefix + r * patches`` tokens.

Everything is linear in the number of computed tokens for a fixed input size,
so the FLOPs at the mean activation rate over a set of inputs equal the mean
of the per-input FLOPs: rates measured over a dataset give its mean FLOPs.
A video clip costs its number of frames times the FLOPs of one frame.
"""
import math
from dataclasses import dataclass, field
from functools import singledispatch
from typing import List, Optional, Sequence, Tuple

import torch.nn as nn

from .backbones import DyTSwinTransformer, DyTViT
from .layers.adapters import MoEAdapter
from .layers.dyt_block import SITES

#: FLOPs per element of an affine LayerNorm (fvcore's and mmengine's rule).
NORM_FLOPS_PER_ELEMENT = 5


@dataclass
class FlopsReport:
    """FLOPs (multiply-accumulates) of one image through a DyT backbone.

    Attributes:
        patch_embed (float): The patch embedding.
        blocks (list[float]): Each executed block, adapters and dispatchers
            included.
        final_norm (float): The final LayerNorm, if the backbone has one and
            runs its last block. Defaults to 0.
    """
    patch_embed: float
    blocks: List[float] = field(default_factory=list)
    final_norm: float = 0.
    #: A Swin's patch merging layers and stage output norms.
    between_stages: float = 0.

    @property
    def total(self) -> float:
        """FLOPs of the backbone for one image."""
        return (self.patch_embed + sum(self.blocks) + self.final_norm +
                self.between_stages)


def _adapter_flops(adapter: Optional[nn.Module], num_tokens: int,
                   channels: int) -> float:
    if adapter is None:
        return 0.
    if isinstance(adapter, MoEAdapter):
        experts, bottleneck = adapter.down_weight.shape[:2]
        # per image: the router on the token mean, then merging the experts'
        # two weight matrices and two biases
        merge = (channels * experts + 2 * experts * bottleneck * channels +
                 experts * (bottleneck + channels))
        return 2 * num_tokens * channels * bottleneck + merge
    return 2 * num_tokens * channels * adapter.down.out_features


def _grid_attention_flops(block: nn.Module, grid: Tuple[int, int],
                          channels: int) -> float:
    """FLOPs of a ViTDet attention (:class:`WindowAttention`) over a patch
    grid, its norm excluded: projections on the (padded) windows, attention
    inside them, and the decomposed relative position einsums."""
    window = block.attn.window_size
    if window:
        padded = [math.ceil(side / window) * window for side in grid]
        tokens = padded[0] * padded[1]
        span, key_sides = window * window, (window, window)
    else:
        tokens = span = grid[0] * grid[1]
        key_sides = grid
    flops = 4 * tokens * channels * channels + 2 * tokens * span * channels
    if block.attn.use_rel_pos:
        flops += tokens * channels * sum(key_sides)
    return flops


@singledispatch
def backbone_flops(backbone: nn.Module,
                   img_size: Tuple[int, int],
                   rates: Optional[Sequence[float]] = None,
                   with_dyt: bool = True) -> FlopsReport:
    """FLOPs of one image (or frame) through a DyT backbone: the FLOPs
    function of its type (:func:`dyt_vit_flops`, :func:`dyt_swin_flops`).

    Args:
        backbone (DyTViT | DyTSwinTransformer): The model (its structure is
            read, not run).
        img_size (tuple[int, int]): Input height and width.
        rates (Sequence[float], optional): Activation rate of every
            dispatcher, in the backbone's ``dispatch_sites`` order. None
            means every token is computed. Defaults to None.
        with_dyt (bool): Count adapters and dispatchers. Defaults to True.

    Returns:
        FlopsReport: The FLOPs of the patch embedding and of each block.

    Raises:
        TypeError: For a backbone with no FLOPs model.
    """
    raise TypeError(f'no FLOPs model for {type(backbone).__name__}: '
                    'backbone_flops counts DyTViT and DyTSwinTransformer')


@backbone_flops.register(DyTViT)
def dyt_vit_flops(backbone: nn.Module,
                  img_size: Tuple[int, int],
                  rates: Optional[Sequence[float]] = None,
                  with_dyt: bool = True) -> FlopsReport:
    """FLOPs of one image (or frame) through a :class:`DyTViT`.

    Args:
        backbone (DyTViT): The model (its structure is read, not run).
        img_size (tuple[int, int]): Input height and width.
        rates (Sequence[float], optional): Activation rate of every
            dispatcher, in :attr:`DyTViT.dispatch_sites` order (for
            ``'layer'`` dispatch the fraction of computed samples). None means
            every token is computed. Defaults to None.
        with_dyt (bool): Count adapters and dispatchers. False gives the
            plain pre-trained ViT. Defaults to True.

    Returns:
        FlopsReport: The patch embedding's and each executed block's FLOPs.

    Examples:
        >>> from mmdyt.models import DyTViT
        >>> vit_b = DyTViT(arch='base')
        >>> round(dyt_vit_flops(vit_b, (224, 224), with_dyt=False).total / 1e9,
        ...       2)
        17.58
    """
    channels = backbone.embed_dims
    hidden = backbone.arch_settings['feedforward_channels']
    patch = backbone.patch_size
    grid = (img_size[0] // patch, img_size[1] // patch)
    patches = grid[0] * grid[1]
    prefix = backbone.num_prefix_tokens
    tokens = prefix + patches
    norm = NORM_FLOPS_PER_ELEMENT * channels
    rate_of = _site_rates(backbone, rates)

    report = FlopsReport(
        patch_embed=patches * channels * backbone.in_channels * patch * patch)
    last = max(backbone.out_indices)
    for index, block in enumerate(backbone.blocks[:last + 1]):
        queries = prefix + rate_of.get((index, 'attn'), 1.) * patches
        computed = prefix + rate_of.get((index, 'mlp'), 1.) * patches
        if getattr(block, 'grid_attention', False):  # ViTDet's
            attn = _grid_attention_flops(block, grid,
                                         channels) + tokens * norm
        else:
            attn = (2 * tokens * channels * channels  # keys and values
                    + 2 * queries * channels * channels  # queries, proj
                    + 2 * queries * tokens * channels  # scores, weighted sum
                    + tokens * norm)  # norm1: keys and values: every token
        mlp = 2 * computed * channels * hidden + computed * norm
        flops = (attn + mlp) * rate_of.get((index, 'layer'), 1.)
        if with_dyt:
            for site in SITES:
                flops += _adapter_flops(
                    getattr(block, f'{site}_adapter'), tokens, channels)
            for site in block.dispatch_sites:
                # evaluation scores every token (the prefix's decisions are
                # overridden), the layer dispatcher one summary per sample
                flops += channels * (1 if site == 'layer' else tokens)
        report.blocks.append(flops)
    if getattr(backbone, 'norm', None) is not None and \
            last == backbone.num_layers - 1:
        report.final_norm = tokens * norm
    return report


def _site_rates(backbone: nn.Module,
                rates: Optional[Sequence[float]]) -> dict:
    """``{(block, site): rate}`` of every dispatcher; all 1 for None."""
    sites = backbone.dispatch_sites
    if rates is None:
        rates = [1.0] * len(sites)
    if len(rates) != len(sites):
        raise ValueError(f'got {len(rates)} rates for {len(sites)} '
                         'dispatchers')
    return dict(zip(sites, rates))


@backbone_flops.register(DyTSwinTransformer)
def dyt_swin_flops(backbone: nn.Module,
                   img_size: Tuple[int, int],
                   rates: Optional[Sequence[float]] = None,
                   with_dyt: bool = True) -> FlopsReport:
    """FLOPs of one image through a :class:`DyTSwinTransformer`, with the
    rules of :func:`dyt_vit_flops`.

    Counted: the patch embedding (and its norm); in every block its norms,
    the qkv and output projections and the window attention on the grid
    padded to a multiple of the window (mmseg pads it so), the FFN on the
    tokens it computes (``r`` of them), and with ``with_dyt`` the adapter
    and the dispatcher on every token; the patch merging layers (norm and
    reduction) and the norms of the ``out_indices`` stages. The shift, the
    relative position bias and the masks are free.

    Args:
        backbone (DyTSwinTransformer): The model (read, not run).
        img_size (tuple[int, int]): Input height and width.
        rates (Sequence[float], optional): Activation rate of every
            dispatcher (:attr:`dispatch_sites` order). Defaults to None
            (every token computed).
        with_dyt (bool): Count adapters and dispatchers. Defaults to True.
    """
    rate_of = _site_rates(backbone, rates)
    patch = backbone.patch_size
    grid = (math.ceil(img_size[0] / patch), math.ceil(img_size[1] / patch))
    channels = backbone.stages[0].blocks[0].norm1.normalized_shape[0]
    tokens = grid[0] * grid[1]
    embed = tokens * channels * backbone.in_channels * patch * patch
    if backbone.patch_embed.norm is not None:
        embed += tokens * channels * NORM_FLOPS_PER_ELEMENT
    report = FlopsReport(patch_embed=embed)
    index = 0
    for stage_index, stage in enumerate(backbone.stages):
        tokens = grid[0] * grid[1]
        for block in stage.blocks:
            window = block.attn.window_size
            padded = (math.ceil(grid[0] / window) * window *
                      math.ceil(grid[1] / window) * window)
            hidden = block.ffn.layers[0][0].out_features
            computed = rate_of.get((index, 'mlp'), 1.) * tokens
            flops = (tokens * channels * NORM_FLOPS_PER_ELEMENT  # norm1
                     + 4 * padded * channels * channels  # qkv, proj
                     + 2 * padded * window * window * channels  # attention
                     + computed * channels * NORM_FLOPS_PER_ELEMENT  # norm2
                     + 2 * computed * channels * hidden)  # the FFN
            if with_dyt:
                flops += _adapter_flops(block.mlp_adapter, tokens, channels)
                flops += channels * tokens * len(block.dispatch_sites)
            report.blocks.append(flops)
            index += 1
        if stage_index in backbone.out_indices:
            report.between_stages += tokens * channels * \
                NORM_FLOPS_PER_ELEMENT
        if stage.downsample:
            grid = (math.ceil(grid[0] / 2), math.ceil(grid[1] / 2))
            merged = grid[0] * grid[1]
            report.between_stages += merged * 4 * channels * (
                2 * channels + NORM_FLOPS_PER_ELEMENT)
            channels *= 2
    return report
