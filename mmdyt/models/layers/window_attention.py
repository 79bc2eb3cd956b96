"""ViTDet's attention: windowed or global, with decomposed relative position.

ViTDet (Li et al., ECCV 2022) adapts a plain ViT to detection at 1024² by
computing attention inside non-overlapping windows in most blocks (a few
blocks stay global) and by adding MViTv2's decomposed relative position bias
to the attention logits. timm implements both for SAM's image encoder
(``timm.models.vision_transformer_sam``), the same design; this module reuses
its attention, partition and unpartition functions and only adapts them to
DyT's ``(B, N, C)`` token sequences.
"""
from typing import Optional, Tuple

import torch.nn as nn
from timm.models.vision_transformer_sam import Attention as SAMAttention
from timm.models.vision_transformer_sam import (window_partition,
                                                window_unpartition)
from torch import Tensor

from mmdyt.utils.torch_compat import is_exporting


class WindowAttention(SAMAttention):
    """Self-attention of a ViTDet block over patch tokens on a grid.

    With ``window_size > 0`` the grid is padded (with zeros, at the bottom
    and right) to a multiple of the window and attention runs inside each
    window, without shift; otherwise it runs over the whole grid. The padded
    tokens take part in the windows' attention, as in ViTDet, and are dropped
    afterwards. With ``use_rel_pos`` the decomposed relative position bias
    (``rel_pos_h``, ``rel_pos_w``: zero at init) is added to the logits; its
    tables are made for ``input_size`` (the window, or the whole grid) and
    interpolated linearly for other sizes, as timm and ViTDet do.

    Parameter names are timm's (``qkv``, ``proj``, ``rel_pos_h``,
    ``rel_pos_w``), so timm ViT and SAM checkpoints load as they are.

    Args:
        dim (int): Token channels.
        num_heads (int): Attention heads.
        qkv_bias (bool): Whether the qkv projection has a bias.
            Defaults to True.
        attn_drop (float): Dropout on attention weights. Defaults to 0.
        proj_drop (float): Dropout after the projection. Defaults to 0.
        window_size (int): Side of the attention windows, 0 for global
            attention. Defaults to 0.
        use_rel_pos (bool): Add the decomposed relative position bias.
            Defaults to False.
        input_size (tuple[int, int], optional): Patch grid of global
            attention, for the relative position tables (a window's side is
            used with ``window_size > 0``). Needed with ``use_rel_pos`` and
            no window. Defaults to None.
    """

    def __init__(self,
                 dim: int,
                 num_heads: int,
                 qkv_bias: bool = True,
                 attn_drop: float = 0.,
                 proj_drop: float = 0.,
                 window_size: int = 0,
                 use_rel_pos: bool = False,
                 input_size: Optional[Tuple[int, int]] = None):
        if window_size < 0:
            raise ValueError(f'window_size must be >= 0, got {window_size}')
        if window_size:
            input_size = (window_size, window_size)
        if use_rel_pos and input_size is None:
            raise ValueError(
                'use_rel_pos with global attention needs input_size, the '
                'patch grid the relative position tables are made for')
        super().__init__(
            dim,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            attn_drop=attn_drop,
            proj_drop=proj_drop,
            norm_layer=nn.LayerNorm,
            use_rel_pos=use_rel_pos,
            input_size=input_size)
        self.window_size = window_size

    def forward(self, x: Tensor, grid: Tuple[int, int]) -> Tensor:
        """Attend over the tokens ``x`` (B, N, C) of a patch grid ``grid``
        (rows, columns; ``N = rows * columns``, no prefix token)."""
        batch, num_tokens, channels = x.shape
        if grid is None or grid[0] * grid[1] != num_tokens:
            raise ValueError(
                f'WindowAttention got {num_tokens} tokens for a patch grid '
                f'{grid}: ViTDet attention needs the grid of the patch '
                'tokens and no prefix (cls) token')
        if not batch:  # e.g. layer dispatch skipped every sample
            return x
        x = x.reshape(batch, grid[0], grid[1], channels)
        if self.window_size:
            x, padded = window_partition(x, self.window_size)
            x = window_unpartition(
                self._attend(x), self.window_size, tuple(grid), padded)
        else:
            x = self._attend(x)
        return x.reshape(batch, num_tokens, channels)

    def _attend(self, x: Tensor) -> Tensor:
        """timm's attention over (B, H, W, C) windows. Under
        ``torch.export`` (ONNX export) its unfused form: timm's fused call
        passes 3-D (batch x heads) tensors to ``scaled_dot_product_attention``,
        which the ONNX exporter takes in 4-D only."""
        if not (self.fused_attn and is_exporting()):
            return super().forward(x)
        self.fused_attn = False
        try:
            return super().forward(x)
        finally:
            self.fused_attn = True

    def extra_repr(self) -> str:
        return (f'window_size={self.window_size}, '
                f'use_rel_pos={self.use_rel_pos}')
