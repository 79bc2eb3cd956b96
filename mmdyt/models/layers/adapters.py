"""Bottleneck adapters: the trainable update every token receives."""
import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor

from mmdyt.registry import register
from mmdyt.utils.args import suggest_unknown_arguments
from mmdyt.utils.torch_compat import autocast_enabled


def _check_adapter_args(bottleneck: int, scale: float, dropout: float) -> None:
    if not isinstance(bottleneck, int) or bottleneck < 1:
        raise ValueError(
            f'bottleneck must be a positive int, got {bottleneck!r}')
    if not isinstance(scale, (int, float)):
        raise ValueError(f'scale must be a number, got {scale!r}')
    if not 0 <= dropout < 1:
        raise ValueError(f'dropout must be in [0, 1), got {dropout!r}')


def _added(residual: Tensor, update: Tensor, inplace: bool) -> Tensor:
    """``residual + update``, into ``residual`` itself if ``inplace``."""
    return residual.add_(update) if inplace else residual + update


@register('MODELS')
@suggest_unknown_arguments
class Adapter(BaseModule):
    """AdaptFormer-style bottleneck adapter
    (docs/en/advanced_guides/method.md).

    ``Adapter(x) = scale * (W_up Dropout(ReLU(W_down x + b_down)) + b_up)``.
    ``W_down`` is kaiming-uniform initialised, ``W_up`` and both biases are
    zero, so a fresh adapter outputs zeros and a fresh DyT model equals the
    pre-trained ViT.

    Args:
        embed_dims (int): Channels of the tokens.
        bottleneck (int): Hidden width ``d``. Defaults to 64.
        scale (float): Output scale ``s``. Defaults to 0.1.
        dropout (float): Dropout on the bottleneck activations.
            Defaults to 0.1.
        init_cfg (dict, optional): Initialisation config. The constructor
            already initialises the adapter as above. Defaults to None.

    Examples:
        >>> import torch
        >>> adapter = Adapter(embed_dims=8, bottleneck=4)
        >>> adapter(torch.randn(2, 5, 8)).abs().max().item()
        0.0
    """

    def __init__(self,
                 embed_dims: int,
                 bottleneck: int = 64,
                 scale: float = 0.1,
                 dropout: float = 0.1,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        _check_adapter_args(bottleneck, scale, dropout)
        self.scale = float(scale)
        self.down = nn.Linear(embed_dims, bottleneck)
        self.up = nn.Linear(bottleneck, embed_dims)
        self.dropout = nn.Dropout(dropout)
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Return the adapter's update of tokens ``x`` (B, N, C)."""
        return self.up(self.dropout(F.relu(self.down(x)))) * self.scale

    def add_to(self,
               residual: Tensor,
               x: Tensor,
               inplace: bool = False) -> Tensor:
        """``residual + self(x)``: the adapter's update added to the
        residual stream.

        In evaluation (no dropout) the up-projection, the scale and the
        residual add are one ``addmm`` into the residual, instead of a
        matmul and two more passes over the tokens. Under autocast with a
        float32 residual the down-projection computes in autocast's dtype
        and that ``addmm`` in float32 (its inner dimension is the
        bottleneck: few FLOPs, and no low-precision copy of the update to
        write and convert).

        Args:
            residual (Tensor): The stream (..., C) the update is added to.
            x (Tensor): The adapter's input (..., C); it may be
                ``residual`` itself.
            inplace (bool): Add into ``residual``'s own storage (when it is
                contiguous), which must be a tensor the caller owns and no
                autograd graph needs. An in-place ``addmm_`` is cheaper than
                an out-of-place one, which first copies the residual into
                its output. Defaults to False.

        Returns:
            Tensor: ``residual + self(x)``, shaped like ``residual``.
        """
        device = x.device.type
        autocast = autocast_enabled(device)
        if autocast:  # the addmm in float32, out of autocast
            fused = residual.dtype == self.up.weight.dtype == torch.float32
        else:
            fused = residual.dtype == x.dtype
        if self.training or not fused:
            return _added(residual, self(x), inplace)
        hidden = F.relu(self.down(x)).flatten(0, -2)
        if not autocast:
            return self._add_up(residual, hidden, inplace)
        with torch.autocast(device, enabled=False):
            return self._add_up(residual, hidden.float(), inplace)

    def _add_up(self, residual: Tensor, hidden: Tensor,
                inplace: bool) -> Tensor:
        """``residual + scale * up(hidden)`` as one ``addmm``."""
        flat = residual.flatten(0, -2)
        weight = self.up.weight.t()
        if inplace:
            out = flat.addmm_(hidden, weight, alpha=self.scale)
        else:
            out = torch.addmm(flat, hidden, weight, alpha=self.scale)
        return out.add_(self.up.bias, alpha=self.scale).view_as(residual)


@register('MODELS')
@suggest_unknown_arguments
class MoEAdapter(BaseModule):
    """Mixture-of-experts adapter, the paper's DyT-dagger
    (docs/en/advanced_guides/method.md).

    ``num_experts`` adapters share the work through a router ``Linear(C, N)``
    fed the mean of the input tokens: one softmax-normalised routing vector
    ``alpha`` per image (or frame), not per token. The experts' weights and
    biases are merged per sample, ``W = sum_i alpha_i W_i``, and one adapter
    runs with the merged weights (a batched matmul), so the cost is one
    adapter plus the router.

    Args:
        embed_dims (int): Channels of the tokens.
        num_experts (int): Number of adapter experts, >= 1. Defaults to 4.
        bottleneck (int): Hidden width of each expert. Defaults to 64.
        scale (float): Output scale. Defaults to 0.1.
        dropout (float): Dropout on the bottleneck activations.
            Defaults to 0.1.
        init_cfg (dict, optional): Initialisation config. The constructor
            initialises every expert like :class:`Adapter` and the router
            with trunc-normal weights (std 0.02). Defaults to None.
    """

    def __init__(self,
                 embed_dims: int,
                 num_experts: int = 4,
                 bottleneck: int = 64,
                 scale: float = 0.1,
                 dropout: float = 0.1,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        _check_adapter_args(bottleneck, scale, dropout)
        if not isinstance(num_experts, int) or num_experts < 1:
            raise ValueError(
                f'num_experts must be a positive int, got {num_experts!r}')
        self.scale = float(scale)
        self.num_experts = num_experts
        self.router = nn.Linear(embed_dims, num_experts)
        self.down_weight = nn.Parameter(
            torch.empty(num_experts, bottleneck, embed_dims))
        self.down_bias = nn.Parameter(torch.zeros(num_experts, bottleneck))
        self.up_weight = nn.Parameter(
            torch.zeros(num_experts, embed_dims, bottleneck))
        self.up_bias = nn.Parameter(torch.zeros(num_experts, embed_dims))
        self.dropout = nn.Dropout(dropout)
        for weight in self.down_weight:
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
        nn.init.trunc_normal_(self.router.weight, std=0.02)
        nn.init.zeros_(self.router.bias)

    def add_to(self,
               residual: Tensor,
               x: Tensor,
               inplace: bool = False) -> Tensor:
        """``residual + self(x)``, into ``residual`` itself if ``inplace``
        (as :meth:`Adapter.add_to`)."""
        return _added(residual, self(x), inplace)

    def routing_weights(self, x: Tensor) -> Tensor:
        """Return the per-sample expert weights ``alpha`` (B, num_experts)."""
        return self.router(x.mean(dim=1)).softmax(dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        """Return the adapter's update of tokens ``x`` (B, N, C)."""
        alpha = self.routing_weights(x)
        down_w = torch.einsum('be,edc->bdc', alpha, self.down_weight)
        up_w = torch.einsum('be,ecd->bcd', alpha, self.up_weight)
        hidden = torch.baddbmm((alpha @ self.down_bias).unsqueeze(1), x,
                               down_w.transpose(1, 2))
        hidden = self.dropout(F.relu(hidden))
        out = torch.baddbmm((alpha @ self.up_bias).unsqueeze(1), hidden,
                            up_w.transpose(1, 2))
        return out * self.scale
