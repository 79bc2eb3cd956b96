"""AttentivePoolHead: a learned query pools all frames' tokens of a clip."""
from typing import Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmaction.models.heads import BaseHead
from timm.layers import trunc_normal_
from torch import Tensor

from mmdyt.registry import register
from mmdyt.utils.args import suggest_unknown_arguments
from mmdyt.utils.torch_compat import backward_safe_attention


@register('MODELS', scopes=('mmaction', ))
@suggest_unknown_arguments
class AttentivePoolHead(BaseHead):
    """Classification head pooling a clip's tokens with one learned query.

    DyT's video head (docs/en/advanced_guides/method.md, "Video"): the
    tokens of all frames, cls tokens included,
    ``(N, T, L, C) -> (N, T*L, C)``, are pooled by a zero-initialised query
    token through one cross-attention block (the
    ``AttentiveBlock`` of the authors' code: separate LayerNorms for the
    query, keys and values, multi-head attention, biases on the query and
    value projections but not the key's, an output projection, no residual),
    followed by dropout and a linear classifier. Losses, prediction and
    multi-view averaging (``average_clips``) are mmaction2's ``BaseHead``'s.

    Nothing in DyT's video model knows the order of the frames (no temporal
    embedding in the backbone, a set pooling here): the scores do not change
    when the frames are permuted, so a clip and its time reversal get the
    same scores.

    Args:
        num_classes (int): Number of classes.
        in_channels (int): Channels ``C`` of the backbone's tokens.
        num_heads (int): Attention heads; must divide ``in_channels``.
            Defaults to 12.
        qkv_bias (bool): Biases on the query and value projections.
            Defaults to True.
        attn_drop (float): Dropout on the attention weights. Defaults to 0.
        dropout_ratio (float): Dropout before the classifier. Defaults to 0.5.
        norm_eps (float): Epsilon of the LayerNorms. Defaults to 1e-6.
        init_std (float): Std of the classifier's truncated-normal
            initialisation. Defaults to 0.01.
        **kwargs: Arguments of mmaction2's ``BaseHead`` (``loss_cls``,
            ``average_clips``, ``topk``, ``label_smooth_eps``, ``init_cfg``).

    Examples:
        >>> import torch
        >>> head = AttentivePoolHead(num_classes=4, in_channels=32,
        ...                          num_heads=4)
        >>> head((torch.randn(2, 8, 17, 32), )).shape  # (N, T, L, C) tokens
        torch.Size([2, 4])
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: int,
                 num_heads: int = 12,
                 qkv_bias: bool = True,
                 attn_drop: float = 0.,
                 dropout_ratio: float = 0.5,
                 norm_eps: float = 1e-6,
                 init_std: float = 0.01,
                 **kwargs) -> None:
        super().__init__(num_classes, in_channels, **kwargs)
        if num_heads < 1 or in_channels % num_heads:
            raise ValueError(f'num_heads ({num_heads}) must be a positive '
                             f'divisor of in_channels ({in_channels})')
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        self.init_std = init_std

        self.query_token = nn.Parameter(torch.zeros(1, 1, in_channels))
        self.norm_q = nn.LayerNorm(in_channels, eps=norm_eps)
        self.norm_k = nn.LayerNorm(in_channels, eps=norm_eps)
        self.norm_v = nn.LayerNorm(in_channels, eps=norm_eps)
        self.q = nn.Linear(in_channels, in_channels, bias=qkv_bias)
        self.k = nn.Linear(in_channels, in_channels, bias=False)
        self.v = nn.Linear(in_channels, in_channels, bias=qkv_bias)
        self.proj = nn.Linear(in_channels, in_channels)
        self.dropout = nn.Dropout(dropout_ratio) if dropout_ratio > 0 \
            else nn.Identity()
        self.fc_cls = nn.Linear(in_channels, num_classes)
        self._init_head_weights()

    def _init_head_weights(self) -> None:
        """Trunc-normal projections and classifier, zero biases."""
        for layer in (self.q, self.k, self.v, self.proj):
            trunc_normal_(layer.weight, std=.02)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        trunc_normal_(self.fc_cls.weight, std=self.init_std)
        nn.init.zeros_(self.fc_cls.bias)

    def _tokens(self, x: Union[Tensor, Sequence[Tensor]]) -> Tensor:
        """The (N, T, L, C) tokens of a backbone output."""
        if isinstance(x, (tuple, list)):
            if not x:
                raise ValueError('AttentivePoolHead got an empty tuple')
            x = x[-1]
        if x.dim() == 3:  # (N, L, C): one frame
            x = x.unsqueeze(1)
        if x.dim() != 4 or x.shape[-1] != self.in_channels:
            raise ValueError(
                'AttentivePoolHead expects tokens (N, T, L, C) (a DyTViT '
                "with out_type='raw') or (N, L, C) with C = "
                f'{self.in_channels}, got shape {tuple(x.shape)}')
        return x

    def pool(self, x: Union[Tensor, Sequence[Tensor]]) -> Tensor:
        """Pool the tokens of each clip into one (N, C) feature."""
        tokens = self._tokens(x)
        num_clips = tokens.shape[0]
        tokens = tokens.flatten(1, 2)  # every frame's tokens: one set
        query = self.query_token.expand(num_clips, -1, -1)

        def heads(t: Tensor) -> Tensor:  # (N, S, C) -> (N, heads, S, C/h)
            return t.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)

        with backward_safe_attention(tokens):
            out = F.scaled_dot_product_attention(
                heads(self.q(self.norm_q(query))),
                heads(self.k(self.norm_k(tokens))),
                heads(self.v(self.norm_v(tokens))),
                dropout_p=self.attn_drop if self.training else 0.)
        return self.proj(out.transpose(1, 2).flatten(2)).squeeze(1)

    def forward(self, x: Union[Tensor, Sequence[Tensor]], **kwargs) -> Tensor:
        """Class scores (N, num_classes) of the backbone's tokens ``x``.

        Args:
            x (Tensor | tuple[Tensor]): Tokens (N, T, L, C) or (N, L, C), or
                a tuple whose last element is such a tensor (a backbone's
                outputs).
            **kwargs: Ignored (mmaction2 passes e.g. ``loss_aux``).
        """
        return self.fc_cls(self.dropout(self.pool(x)))
