"""The Swin models ``benchmark.py --preset swin-b-512`` times.

The same roles as ``benchmark_models`` gives the ViT presets, on one set of
random Swin-B weights:

- ``dense``: mmseg's ``SwinTransformer`` (no adapter, no dispatch);
- ``adapter``: :class:`DyTSwinTransformer` with ``dispatch=None``;
- ``dyt``: :class:`DyTSwinTransformer` with FFN dispatch (the gathered
  evaluation);
- ``reference`` (:class:`SwinReferenceGather`): DyT's evaluation written the
  straightforward way (``nonzero``, gather, FFN, write into a zero buffer,
  add);
- ``ideal`` (:class:`SwinIdealSlice`): each block's FFN on one contiguous
  slice of as many tokens as DyT computes there: DyT's FLOPs without its
  bookkeeping.
"""
from typing import List, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from mmdyt.models import DyTSwinTransformer

#: Swin-B as mmseg's ADE20K recipe builds it (window 12, 384 pre-training).
SWIN_B = dict(embed_dims=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32),
              window_size=12, pretrain_img_size=384, drop_path_rate=0.)


class _SwinFFNPeer(nn.Module):
    """A DyT Swin whose FFN part of each block is computed another way
    (:meth:`ffn_part`); everything else is the DyT model's own."""

    def __init__(self, dyt: DyTSwinTransformer):
        super().__init__()
        self.dyt = dyt

    def ffn_part(self, index: int, block: nn.Module, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> List[Tensor]:
        dyt = self.dyt
        x, hw_shape = dyt.patch_embed(x)
        x = dyt.drop_after_pos(x)
        outs, index = [], 0
        for i, stage in enumerate(dyt.stages):
            for block in stage.blocks:
                x = x + block.attn(block.norm1(x), hw_shape)
                x = self.ffn_part(index, block, x)
                index += 1
            out, out_hw_shape = x, hw_shape
            if stage.downsample:
                x, hw_shape = stage.downsample(x, hw_shape)
            if i in dyt.out_indices:
                out = getattr(dyt, f'norm{i}')(out)
                outs.append(out.view(-1, *out_hw_shape,
                                     dyt.num_features[i]).permute(
                                         0, 3, 1, 2).contiguous())
        return outs


class SwinReferenceGather(_SwinFFNPeer):
    """The straightforward gathered evaluation of the DyT model it wraps."""

    def ffn_part(self, index: int, block: nn.Module, x: Tensor) -> Tensor:
        mask = block.mlp_dispatcher(x)
        flat = x.flatten(0, 1)
        active = mask.flatten().nonzero().squeeze(1)
        update = torch.zeros_like(flat)
        update[active] = block._ffn_update(flat[active])
        return (flat + update).view_as(x) + block.mlp_adapter(x)


class SwinIdealSlice(_SwinFFNPeer):
    """Each FFN on the first ``active`` tokens of the flattened batch, as
    many as DyT computes in that block (:meth:`set_active`)."""

    def __init__(self, dyt: DyTSwinTransformer):
        super().__init__(dyt)
        self.active: List[int] = []

    def set_active(self, masks: Sequence[Tensor]) -> None:
        """Take the computed token counts from DyT's masks of the input."""
        self.active = [int(mask.count_nonzero()) for mask in masks]

    def ffn_part(self, index: int, block: nn.Module, x: Tensor) -> Tensor:
        active = self.active[index]
        update = block._ffn_update(x.flatten(0, 1)[:active])
        out = block.mlp_adapter.add_to(x, x, inplace=True)
        out.flatten(0, 1)[:active].add_(update)
        return out


def build_swin_models(img_size: int, seed: int = 0):
    """The dense, adapter-only and DyT Swin-B (same random weights) and the
    reference and ideal-slice peers, as ``benchmark_models.BenchmarkModels``.
    """
    from mmseg.models.backbones import SwinTransformer

    from benchmark_models import BenchmarkModels
    torch.manual_seed(seed)
    dense = SwinTransformer(**SWIN_B)
    dense.init_weights()
    dense.eval()
    dyt = DyTSwinTransformer(**SWIN_B).eval()
    adapter = DyTSwinTransformer(**SWIN_B, dispatch=None).eval()
    with torch.no_grad():  # adapters that compute something
        for name, param in dyt.named_parameters():
            if '_adapter.up' in name:
                param.normal_(0, 0.02)
    for model in (dyt, adapter):
        model.load_state_dict(dense.state_dict(), strict=False)
    adapter.load_state_dict(dyt.state_dict(), strict=False)
    dyt.img_size = adapter.img_size = (img_size, img_size)
    return BenchmarkModels(dense, adapter, dyt, SwinReferenceGather(dyt),
                           SwinIdealSlice(dyt))
