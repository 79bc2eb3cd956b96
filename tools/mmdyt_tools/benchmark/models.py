"""Building the benchmarked backbones on one set of random weights.

Three backbones share the same pre-trained weights and run on the same
inputs (:func:`build_benchmark_models`):

- ``dense``: timm's ``VisionTransformer`` (``forward_features``), i.e. the
  plain pre-trained ViT one would deploy without DyT, with timm's fused
  ``scaled_dot_product_attention``. It is not a DyT model run with
  ``complete=True``: that would include the adapters (it is the
  adapter-only cost) and DyT's bookkeeping, and would flatter DyT.
- ``adapter``: :class:`DyTViT` with ``dispatch=None``: the adapter-only
  (AdaptFormer-style) baseline, every token through every MLP.
- ``dyt``: :class:`DyTViT` with MLP dispatch in eval mode: the gathered
  path, where skipped tokens do not enter the MLP.
- ``reference``: the same DyT model evaluated the straightforward way
  (:class:`ReferenceGatherDyT`: ``nonzero``, gather, MLP, write into a zero
  buffer by index, add): the peer DyT's gathered path must beat.
- ``dense_again``: the dense model timed a second time, the noise control.
- ``ideal``: DyT's FLOPs without its bookkeeping, the floor of any
  token-skipping implementation on this machine
  (``peers.IdealSliceDyT``).
- with ``compile=True``, ``dense_compiled`` and ``dyt_compiled``: the dense
  model and DyT under ``torch.compile`` (``peers.py``).
- with ``prepack=True``, ``dense_prepacked`` and ``dyt_prepacked``: the
  dense model and DyT in eager mode with pre-packed weights
  (``peers.prepacked_copy``).
- with ``bf16=True``, ``dense_bf16`` and ``dyt_bf16``: the dense model and
  DyT under ``torch.autocast`` in bfloat16 (``peers.AutocastPeer``).

``dyt``, ``reference`` and ``adapter`` share their adapter weights too.
The weights are random (nothing is downloaded): speed depends on how many
tokens are computed, not on which. Random dispatchers activate about half
of the tokens; ``rate.set_activation_rate`` shifts each dispatcher's bias
so that a target fraction of the tokens of the benchmark input is active.
"""
from functools import partial
from typing import List, Optional

import torch
import torch.nn as nn
from torch import Tensor

from mmdyt.models import DyTViT
from mmdyt_tools.benchmark.model_set import BenchmarkModels
from mmdyt_tools.benchmark.peers import IdealSliceDyT, ReferenceGatherDyT
from mmdyt_tools.benchmark.presets import VITDET_OPTIONS
from mmdyt_tools.benchmark.swin_peers import build_swin_models


class DenseViT(nn.Module):
    """The plain pre-trained ViT: timm's ``forward_features``, videos folded
    frame by frame into the batch as :class:`DyTViT` does.

    Args:
        vit (nn.Module): A timm ``VisionTransformer``.
    """

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.vit = vit

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 5:  # (N, C, T, H, W) -> (N*T, C, H, W)
            x = x.transpose(1, 2).flatten(0, 1)
        return self.vit.forward_features(x)


class DenseSAM(nn.Module):
    """The plain ViTDet backbone: the patch embedding, position embedding
    and blocks of timm's SAM ViT (its neck left out), tokens out as
    ``(N, H*W, C)``.

    Args:
        sam (nn.Module): A timm ``VisionTransformerSAM``.
    """

    def __init__(self, sam: nn.Module):
        super().__init__()
        self.sam = sam

    def forward(self, x: Tensor) -> Tensor:
        x = self.sam.blocks(self.sam.patch_embed(x) + self.sam.pos_embed)
        return x.flatten(1, 2)


def build_benchmark_models(arch: str = 'base',
                           img_size: int = 224,
                           patch_size: int = 16,
                           adapter_cfg: Optional[dict] = None,
                           seed: int = 0,
                           vitdet: bool = False,
                           swin: bool = False) -> BenchmarkModels:
    """Build the dense ViT, the adapter-only and the DyT backbone.

    Args:
        arch (str | dict): A :attr:`DyTViT.arch_zoo` name or arch dict.
            Defaults to ``'base'``.
        img_size (int): Input size. Defaults to 224.
        patch_size (int): Patch size. Defaults to 16.
        adapter_cfg (dict, optional): Adapter config of the DyT models.
            Defaults to None (``Adapter``, bottleneck 64).
        seed (int): Seed of the random weights. Defaults to 0.
        vitdet (bool): ViTDet's backbone (:data:`VITDET_OPTIONS`, no final
            norm), with timm's SAM ViT as the dense model. Defaults to False.
        swin (bool): Swin-B instead of a ViT (``swin_peers.py``; ``arch``,
            ``patch_size`` and ``adapter_cfg`` are not used). Defaults to
            False.
    """
    if swin:
        return build_swin_models(img_size, seed)
    torch.manual_seed(seed)
    common = dict(
        arch=arch,
        img_size=img_size,
        patch_size=patch_size,
        out_type='raw',
        final_norm=not vitdet,
        adapter_cfg=adapter_cfg,
        **(VITDET_OPTIONS if vitdet else {}))
    dyt = DyTViT(dispatch='mlp', **common).eval()
    adapter = DyTViT(dispatch=None, **common).eval()
    if vitdet:
        dense = _dense_sam(dyt)
    else:
        dense = _dense_vit(dyt)
    adapter.load_state_dict(dyt.state_dict(), strict=False)
    return BenchmarkModels(dense, adapter, dyt,
                           ReferenceGatherDyT(dyt).eval(),
                           IdealSliceDyT(dyt).eval())


def _check_shared(missing: List[str], unexpected: List[str]) -> None:
    if unexpected or any('_adapter.' not in k and '_dispatcher.' not in k
                         for k in missing):
        raise RuntimeError(f'timm ViT and DyTViT weights differ: missing '
                           f'{missing[:5]}, unexpected {unexpected[:5]}')


def _dense_vit(dyt: DyTViT) -> DenseViT:
    """A timm ViT whose weights ``dyt`` loads (DyTViT uses timm's
    parameter names: the same pre-trained weights in every model)."""
    from timm.models.vision_transformer import VisionTransformer
    settings = dyt.arch_settings
    vit = VisionTransformer(
        img_size=dyt.img_size,
        patch_size=dyt.patch_size,
        embed_dim=settings['embed_dims'],
        depth=settings['num_layers'],
        num_heads=settings['num_heads'],
        mlp_ratio=settings['feedforward_channels'] / settings['embed_dims'],
        qkv_bias=True,
        num_classes=0,
        global_pool='').eval()
    _check_shared(*dyt.load_state_dict(vit.state_dict(), strict=False))
    return DenseViT(vit)


def _dense_sam(dyt: DyTViT) -> DenseSAM:
    """timm's SAM ViT with ``dyt``'s ViTDet blocks and weights (its
    LayerNorms at DyTViT's eps; its neck is not run)."""
    from timm.models.vision_transformer_sam import VisionTransformerSAM
    settings = dyt.arch_settings
    sam = VisionTransformerSAM(
        img_size=dyt.img_size,
        patch_size=dyt.patch_size,
        embed_dim=settings['embed_dims'],
        depth=settings['num_layers'],
        num_heads=settings['num_heads'],
        mlp_ratio=settings['feedforward_channels'] / settings['embed_dims'],
        use_rel_pos=True,
        window_size=dyt.window_size,
        global_attn_indexes=tuple(
            i for i, b in enumerate(dyt.blocks) if not b.attn.window_size),
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        num_classes=0).eval()
    state = {k: v for k, v in sam.state_dict().items()
             if k.startswith(('blocks.', 'patch_embed.'))}
    state['pos_embed'] = sam.pos_embed.flatten(1, 2)
    _check_shared(*dyt.load_state_dict(state, strict=False))
    return DenseSAM(sam)
