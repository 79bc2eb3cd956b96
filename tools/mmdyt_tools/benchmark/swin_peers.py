"""The Swin models ``benchmark_backbone.py --preset swin-b-512`` times.

The same roles as ``models.py`` gives the ViT presets, on one set of
random Swin-B weights:

- ``dense``: mmseg's ``SwinTransformer`` (no adapter, no dispatch);
- ``adapter``: :class:`DyTSwinTransformer` with ``dispatch=None``;
- ``dyt``: :class:`DyTSwinTransformer` with FFN dispatch (the gathered
  evaluation);
- ``reference`` (:class:`SwinReferenceGather`) and ``ideal``
  (:class:`SwinIdealSlice`): ``peers.py``' reference gather and
  ideal slice, their FFN parts run inside the Swin's stages.
"""
from typing import List

import torch
from torch import Tensor

from mmdyt.models import DyTSwinTransformer
from mmdyt_tools.benchmark.model_set import BenchmarkModels
from mmdyt_tools.benchmark.peers import IdealSliceDyT, ReferenceGatherDyT
from mmdyt_tools.twins import randomize_adapters

#: Swin-B as mmseg's ADE20K recipe builds it (window 12, 384 pre-training).
SWIN_B = dict(embed_dims=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32),
              window_size=12, pretrain_img_size=384, drop_path_rate=0.)


class _SwinStages:
    """A ``peers.py`` peer run on a DyT Swin: the DyT model's own
    stages (:meth:`DyTSwinTransformer.run_stages`), each block's attention
    its own, its FFN part the peer's ``mlp_part``."""

    def forward(self, x: Tensor) -> List[Tensor]:
        return self.dyt.run_stages(
            x, lambda index, block, tokens, hw_shape: self.mlp_part(
                index, block, tokens + block.attn_update(tokens, hw_shape)))


class SwinReferenceGather(_SwinStages, ReferenceGatherDyT):
    """The straightforward gathered evaluation (``ReferenceGatherDyT``) of
    the DyT Swin it wraps."""


class SwinIdealSlice(_SwinStages, IdealSliceDyT):
    """Each FFN on one contiguous slice of as many tokens as DyT computes
    in that block (``IdealSliceDyT``)."""

    def forward(self, x: Tensor) -> List[Tensor]:
        if len(self.active) != len(self.dyt.blocks):
            raise RuntimeError('call set_active with the masks of one DyT '
                               'forward first')
        return _SwinStages.forward(self, x)


def build_swin_models(img_size: int, seed: int = 0):
    """The dense, adapter-only and DyT Swin-B (same random weights) and the
    reference and ideal-slice peers, as a :class:`BenchmarkModels`.
    """
    from mmseg.models.backbones import SwinTransformer

    torch.manual_seed(seed)
    dense = SwinTransformer(**SWIN_B)
    dense.init_weights()
    dense.eval()
    dyt = DyTSwinTransformer(**SWIN_B).eval()
    adapter = DyTSwinTransformer(**SWIN_B, dispatch=None).eval()
    randomize_adapters(dyt)  # adapters that compute something
    for model in (dyt, adapter):
        model.load_state_dict(dense.state_dict(), strict=False)
    adapter.load_state_dict(dyt.state_dict(), strict=False)
    dyt.img_size = adapter.img_size = (img_size, img_size)
    return BenchmarkModels(dense, adapter, dyt, SwinReferenceGather(dyt),
                           SwinIdealSlice(dyt))
