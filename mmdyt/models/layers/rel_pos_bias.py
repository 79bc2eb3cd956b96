"""BEiT-style relative position bias for a ViT block's attention."""
from typing import Optional, Tuple

import torch
import torch.nn as nn
from mmengine.model import BaseModule
from torch import Tensor

from mmdyt.utils.torch_compat import is_compiling


def relative_position_index(grid: Tuple[int, int],
                            num_prefix_tokens: int = 1) -> Tensor:
    """BEiT's index into a relative position bias table, ``(N, N)`` for the
    ``N = prefix + h*w`` tokens of a ``grid`` (h, w) of patches.

    Patch pairs index the ``(2h - 1) * (2w - 1)`` relative offsets; with a
    cls token, three more entries hold the cls-to-patch, patch-to-cls and
    cls-to-cls biases (BEiT's layout, as mmseg's BEiT and the authors'
    public release have it).

    Args:
        grid (tuple[int, int]): Patch rows and columns.
        num_prefix_tokens (int): 1 (a cls token) or 0. Defaults to 1.
    """
    if num_prefix_tokens not in (0, 1):
        raise ValueError('the relative position bias supports one cls token '
                         f'or none, got {num_prefix_tokens} prefix tokens')
    height, width = grid
    coords = torch.stack(
        torch.meshgrid(torch.arange(height), torch.arange(width),
                       indexing='ij')).flatten(1)  # 2, h*w
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    relative[:, :, 0] += height - 1
    relative[:, :, 1] += width - 1
    relative[:, :, 0] *= 2 * width - 1
    patch_index = relative.sum(-1)
    if not num_prefix_tokens:
        return patch_index
    num_distances = (2 * height - 1) * (2 * width - 1)
    index = torch.zeros(height * width + 1, height * width + 1,
                        dtype=patch_index.dtype)
    index[1:, 1:] = patch_index
    index[0, 1:] = num_distances  # cls to patch
    index[1:, 0] = num_distances + 1  # patch to cls
    index[0, 0] = num_distances + 2  # cls to cls
    return index


class RelativePositionBias(BaseModule):
    """A learned bias per head and relative position, added to the attention
    logits of one block (BEiT).

    The table starts at zero, so a fresh model computes what the
    pre-trained ViT computes; it is trained with the adapters (pre-trained
    ViTs such as IN-21K ones have none).

    Args:
        grid (tuple[int, int]): The patch grid the bias is made for; inputs
            must have this grid.
        num_heads (int): Attention heads.
        num_prefix_tokens (int): 1 (cls token) or 0. Defaults to 1.
        init_cfg (dict, optional): Initialisation config. Defaults to None.

    Examples:
        >>> bias = RelativePositionBias((4, 4), num_heads=2)
        >>> bias().shape  # heads, tokens, tokens
        torch.Size([2, 17, 17])
        >>> bias.relative_position_bias_table.shape  # 7 * 7 + 3 entries
        torch.Size([52, 2])
    """

    def __init__(self,
                 grid: Tuple[int, int],
                 num_heads: int,
                 num_prefix_tokens: int = 1,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.grid = tuple(grid)
        index = relative_position_index(self.grid, num_prefix_tokens)
        num_entries = (2 * grid[0] - 1) * (2 * grid[1] - 1) + \
            3 * num_prefix_tokens
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros(num_entries, num_heads))
        self.register_buffer('relative_position_index', index,
                             persistent=False)
        self.num_tokens = index.shape[0]
        #: ``(key, bias)`` of the last bias computed without gradients.
        self._cache = None

    def forward(self, dtype: Optional[torch.dtype] = None) -> Tensor:
        """The bias ``(heads, N, N)``, in ``dtype`` (default: the table's).

        Without gradients (evaluation, inference) the bias is a constant of
        the table, so it is gathered (and cast) once and kept, contiguous,
        until the table changes (an optimiser step, a loaded checkpoint),
        moves or is asked for in another dtype; this costs ``heads * N * N``
        values per block (50 MB in float32 at 512x512 for ViT-B) and saves a
        gather of that size per block and forward.

        Args:
            dtype (torch.dtype, optional): The dtype the attention computes
                in (e.g. under autocast). Defaults to None.
        """
        table = self.relative_position_bias_table
        dtype = dtype or table.dtype
        # a compiled graph gathers it itself (its constants are its own)
        if torch.is_grad_enabled() and table.requires_grad or \
                is_compiling():
            return self._gather().to(dtype)
        key = (table._version, table.device, table.data_ptr(), dtype)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self._gather().to(dtype).contiguous())
        return self._cache[1]

    def _gather(self) -> Tensor:
        bias = self.relative_position_bias_table[
            self.relative_position_index.flatten()]
        return bias.view(self.num_tokens, self.num_tokens,
                         -1).permute(2, 0, 1)

    def check_tokens(self, num_tokens: int) -> None:
        """Raise a ValueError unless the input has the bias's tokens."""
        if num_tokens != self.num_tokens:
            raise ValueError(
                f'the relative position bias is made for a {self.grid[0]}x'
                f'{self.grid[1]} patch grid ({self.num_tokens} tokens), the '
                f'input has {num_tokens} tokens: use_rel_pos_bias needs '
                "inputs of the backbone's img_size (a sliding-window test "
                'with crops of that size)')

    def extra_repr(self) -> str:
        return f'grid={self.grid}'
