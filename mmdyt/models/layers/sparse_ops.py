"""Gathered (sparse) evaluation of a block's sub-layers on active tokens only.

These are the inference kernels of DyT (docs/en/advanced_guides/method.md,
"Efficient inference"): skipped tokens cost nothing. They equal the masked
formulation used in training to float tolerance.
"""
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Attention
from torch import Tensor

from mmdyt.utils.torch_compat import is_compiling


def active_index(mask: Tensor) -> Tensor:
    """Flat indices of the active entries of ``mask`` (any shape)."""
    return mask.flatten().nonzero().squeeze(1)


def gathered_residual(x: Tensor,
                      index: Tensor,
                      fn: Callable[[Tensor], Tensor],
                      residual: Optional[Callable[[], Tensor]] = None
                      ) -> Tensor:
    """Compute ``residual + mask * fn(x)`` running the token-wise ``fn`` on
    the active tokens only, those of ``index`` (the mask's non-zeros).

    The batch is flattened to ``(B*N, C)`` so that images with different
    numbers of active tokens need no padding. The result is right for any
    number of active tokens; a caller that knows every token is active can
    skip the gather and the scatter (as :class:`DyTBlock` does).

    Args:
        x (Tensor): Tokens (B, N, C).
        index (Tensor): The active tokens' flat indices into ``B*N``
            (:func:`active_index` of the (B, N) mask).
        fn (Callable): A token-wise function ``(M, C) -> (M, C)``.
        residual (Callable, optional): Returns the tensor (B, N, C) the
            update is added to, in place: a fresh tensor the caller owns,
            such as ``x`` plus another update, so that no copy of ``x`` is
            made for the scatter. It is called after ``fn`` has run, so it
            may update ``x`` itself in place. Defaults to None: ``x``
            itself, out of place.

    Returns:
        Tensor: ``residual + mask * fn(x)``, (B, N, C).
    """
    flat = x.flatten(0, 1)
    # index_select: a row gather, faster on CPU than advanced indexing
    update = fn(flat.index_select(0, index))
    if residual is None:
        return flat.index_add(0, index, update).view_as(x)
    return residual().flatten(0, 1).index_add_(0, index, update).view_as(x)


def gathered_mlp_update(
        x: Tensor,
        mask: Optional[Tensor],
        mlp_update: Callable[[Tensor], Tensor],
        adapter: Optional[nn.Module] = None,
        dense: Optional[Callable[[Callable[[], Tensor]], Tensor]] = None
) -> Tensor:
    """``x + mask * mlp_update(x) + adapter(x)`` in evaluation, the MLP
    run on the active tokens of ``mask`` only: the gathered MLP of a DyT
    block (:class:`~mmdyt.models.layers.DyTBlock`,
    :class:`~mmdyt.models.backbones.DyTSwinBlock`).

    ``x`` is the block's own stream (the attention part's fresh output).
    Once the MLP and the adapter have read it, their updates are added into
    it in place (unless autograd needs it): no copy of the stream for the
    scatter. With every token active (known in eager mode only: a compiled
    graph cannot branch on it), the MLP runs on the stream itself, as
    without a dispatcher: no gather, no scatter.

    Args:
        x (Tensor): Tokens (B, N, C).
        mask (Tensor, optional): The mask of all tokens (B, N), non-zero
            for active ones; None: every token is active.
        mlp_update (Callable): The token-wise dense MLP update
            ``(..., C) -> (..., C)`` in the dtype of its input.
        adapter (nn.Module, optional): The MLP's adapter (its ``add_to``
            adds its update of ``x`` into a tensor). Defaults to None.
        dense (Callable, optional): ``dense(residual)`` computes the
            result when every token runs the MLP, given the ``residual``
            callable of :func:`gathered_residual` (e.g. a fused
            matmul-and-add into it). Defaults to None:
            ``residual() + mlp_update(x)``.

    Returns:
        Tensor: The block's output tokens (B, N, C).
    """
    inplace = not (torch.is_grad_enabled() and x.requires_grad)

    def residual() -> Tensor:
        if adapter is not None:
            return adapter.add_to(x, x, inplace=inplace)
        return x if inplace else x.clone()

    if mask is not None:
        index = active_index(mask)
        if is_compiling() or index.numel() < mask.numel():
            return gathered_residual(x, index, mlp_update, residual)
    if dense is not None:
        return dense(residual)
    update = mlp_update(x)
    return residual().add_(update)


def query_subset_attention(attn: Attention,
                           x: Tensor,
                           mask: Tensor,
                           logit_bias: Optional[Tensor] = None) -> Tensor:
    """Self-attention outputs for the active tokens of ``x`` only.

    Queries come from the active tokens, keys and values from all tokens
    (mmdyt's choice for attention dispatch,
    docs/en/advanced_guides/method.md). Queries are
    padded to the largest active count in the batch for one batched
    ``scaled_dot_product_attention`` call.

    Args:
        attn (Attention): A timm attention module (its weights are used).
        x (Tensor): Normalised tokens (B, N, C).
        mask (Tensor): Activation mask (B, N), non-zero for active queries.
        logit_bias (Tensor, optional): A bias of the attention logits
            (heads, N, N), e.g. a relative position bias; the rows of the
            active queries are used. Defaults to None.

    Returns:
        Tensor: Outputs of the active tokens, (num_active, C), in the order of
        :func:`active_index` of ``mask``.
    """
    batch, num_tokens, channels = x.shape
    heads, head_dim = attn.num_heads, attn.head_dim
    dims = heads * head_dim
    weight, bias = attn.qkv.weight, attn.qkv.bias
    kv = F.linear(x, weight[dims:], None if bias is None else bias[dims:])
    k, v = kv.reshape(batch, num_tokens, 2, heads,
                      head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    k = attn.k_norm(k)

    active = mask.bool()
    counts = active.sum(dim=1)
    # at least one query row: an empty one would leave nothing to compute,
    # and a compiled graph cannot branch on it (sym_max is max in eager)
    width = torch.sym_max(int(counts.max()), 1) if batch else 0
    # active tokens first, in their original order
    order = torch.sort((~active).to(torch.uint8), dim=1,
                       stable=True).indices[:, :width]
    valid = torch.arange(width, device=x.device) < counts[:, None]
    x_q = torch.gather(x, 1, order[..., None].expand(-1, -1, channels))
    q = F.linear(x_q, weight[:dims], None if bias is None else bias[:dims])
    q = attn.q_norm(q.reshape(batch, width, heads, head_dim).transpose(1, 2))
    attn_mask = None if logit_bias is None else \
        logit_bias[:, order].transpose(0, 1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
    out = attn.norm(out.transpose(1, 2).reshape(batch, width, dims)[valid])
    if getattr(attn, 'gate', None) is not None:
        out = out * attn.gate(x_q[valid]).sigmoid()
    return attn.proj_drop(attn.proj(out))
