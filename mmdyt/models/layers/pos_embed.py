"""Resampling absolute position embeddings to another patch grid.

:func:`resample_pos_embed` is the one resampling of mmdyt: a ViT's
``load_state_dict`` pre-hook (so every loader gets it), its forward on other
input sizes, and the adapter merge tool use it.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed
from torch import Tensor

__all__ = ['resample_pos_embed', 'has_cls_entry']


def resample_pos_embed(pos_embed: Tensor,
                       new_grid: Tuple[int, int],
                       num_prefix_tokens: int,
                       old_grid: Optional[Tuple[int, int]] = None) -> Tensor:
    """Resample a ``(1, prefix + h*w, C)`` position embedding to
    ``new_grid``; the prefix (cls, register) entries are kept as they are.

    timm's ``resample_abs_pos_embed`` with ``antialias=False``: the patch
    entries are interpolated as a ``C``-channel image, bicubic with
    ``align_corners=False`` (``F.interpolate``'s default, which the timm
    versions mmdyt supports use) and no anti-aliasing, as the authors' public
    release (and BEiT / mmseg) do for ViT checkpoints (timm anti-aliases by
    default, which changes the cubic kernel even when upsampling). This
    wrapper checks the table against its grid first.

    Args:
        pos_embed (Tensor): The table.
        new_grid (tuple[int, int]): The patch grid (rows, columns) to
            resample to.
        num_prefix_tokens (int): Leading entries that are not on the grid.
        old_grid (tuple[int, int], optional): The table's grid; by default
            the square its patch entries make.

    Raises:
        ValueError: If the table's patch entries are not on ``old_grid``
            (a square grid by default).
    """
    num_patches = pos_embed.shape[1] - num_prefix_tokens
    if old_grid is None:
        side = int(round(num_patches**0.5))
        old_grid = (side, side)
    old_grid, new_grid = tuple(old_grid), tuple(new_grid)
    if pos_embed.dim() != 3 or old_grid[0] * old_grid[1] != num_patches:
        raise ValueError(
            f'cannot resample a position embedding of shape '
            f'{tuple(pos_embed.shape)} to a {new_grid[0]}x{new_grid[1]} '
            f'grid: expected (1, prefix + {old_grid[0]}*{old_grid[1]}, '
            'embed_dims)')
    if old_grid == new_grid:
        return pos_embed
    if new_grid[0] == new_grid[1] and \
            new_grid[0] * new_grid[1] == num_patches:
        # a non-square grid to a square one of as many patches, which older
        # timm (1.0.16 to 1.0.28 at least; 1.0.31 resamples it) returns as
        # it is: it ignores old_size there
        return _resample_patch_entries(pos_embed, old_grid, new_grid,
                                       num_prefix_tokens)
    return resample_abs_pos_embed(
        pos_embed,
        new_size=list(new_grid),
        old_size=list(old_grid),
        num_prefix_tokens=num_prefix_tokens,
        interpolation='bicubic',
        antialias=False)


def _resample_patch_entries(pos_embed: Tensor, old_grid: Tuple[int, int],
                            new_grid: Tuple[int, int],
                            num_prefix_tokens: int) -> Tensor:
    """What timm's ``resample_abs_pos_embed(..., antialias=False)``
    computes (timm 1.0.31 in every case), step by step."""
    prefix, patches = pos_embed.split(
        [num_prefix_tokens, pos_embed.shape[1] - num_prefix_tokens], 1)
    channels = pos_embed.shape[2]
    grid = patches.reshape(1, *old_grid, channels).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=new_grid, mode='bicubic',
                         antialias=False)
    patches = grid.permute(0, 2, 3, 1).reshape(1, -1, channels).to(
        pos_embed.dtype)
    return torch.cat([prefix, patches], dim=1)


def has_cls_entry(pos_embed: Tensor) -> bool:
    """Whether a ``(1, L, C)`` position embedding is one entry longer than
    a square patch grid: the cls token's entry first."""
    num = pos_embed.shape[1]
    return round(num**0.5)**2 != num and round((num - 1)**0.5)**2 == num - 1
