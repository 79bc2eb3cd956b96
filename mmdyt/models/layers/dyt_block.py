"""DyTBlock: a ViT block with token dispatch and adapters."""
from functools import partial
from typing import Callable, List, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.model import BaseModule
from timm.layers import Attention, DropPath, LayerScale, Mlp
from torch import Tensor

from mmdyt.registry import build_model
from mmdyt.utils.args import suggest_unknown_arguments
from mmdyt.utils.torch_compat import (autocast_dtype, autocast_enabled,
                                      backward_safe_attention_method,
                                      is_compiling)
from .dispatcher import TokenDispatcher
from .prepacked_linear import add_linear_, mlp_forward
from .rel_pos_bias import RelativePositionBias
from .sparse_ops import (active_index, gathered_mlp_update,
                         query_subset_attention)
from .window_attention import WindowAttention

#: The dispatch sites of a block for each value of ``dispatch``, in the order
#: their masks come (attention before MLP). This table is the one definition
#: of which sites a block has: the block builds its dispatchers from it and
#: the backbone, the FLOPs model and the statistics read it back through
#: :attr:`DyTBlock.dispatch_sites`. ``None`` is the adapter-only baseline
#: (no dispatcher; its adapter sits at the MLP).
DISPATCH_SITES = {
    'mlp': ('mlp', ),
    'attn': ('attn', ),
    'attn_mlp': ('attn', 'mlp'),
    'layer': ('layer', ),
    None: (),
}

#: Values of ``dispatch``: where the token mask acts
#: (docs/en/advanced_guides/method.md).
DISPATCH_MODES = tuple(DISPATCH_SITES)

#: Every site a block can have, in mask order.
SITES = ('attn', 'mlp', 'layer')


def check_dispatch(dispatch: Optional[str]) -> Optional[str]:
    """Return ``dispatch`` if it is one of :data:`DISPATCH_MODES`."""
    if dispatch not in DISPATCH_MODES:
        raise ValueError(f'dispatch must be one of {DISPATCH_MODES}, '
                         f'got {dispatch!r}')
    return dispatch


def adapter_sites(dispatch: Optional[str]) -> Tuple[str, ...]:
    """Sites with an adapter: every dispatch site, the MLP for the
    adapter-only baseline."""
    return DISPATCH_SITES[dispatch] or ('mlp', )


def check_grid_attention(dispatch: Optional[str], num_prefix_tokens: int,
                         rel_pos_bias_grid: Optional[Tuple[int, int]]) -> None:
    """Raise a ValueError if ViTDet attention (windows, decomposed relative
    positions) cannot serve a block with these options."""
    if num_prefix_tokens:
        raise ValueError(
            'windowed attention and use_rel_pos (ViTDet) work on the patch '
            'grid and need a ViT without cls token (with_cls_token=False)')
    if rel_pos_bias_grid is not None:
        raise ValueError(
            'use_rel_pos (ViTDet\'s decomposed relative positions) and '
            'use_rel_pos_bias (BEiT\'s table) exclude each other')
    if dispatch in ('attn', 'attn_mlp'):
        raise ValueError(
            f'dispatch={dispatch!r} skips attention queries, which ViTDet\'s '
            "windowed attention does not support; use dispatch='mlp' or "
            "'layer' (token dispatch at the MLP is DyT's default)")


@suggest_unknown_arguments
class DyTBlock(BaseModule):
    """Pre-norm ViT block with DyT token dispatch and parallel adapters.

    Parameter names follow timm's ``Block`` (``norm1``, ``attn.qkv``,
    ``mlp.fc1``, ...), so timm checkpoints load as they are. ``dispatch`` says
    where the mask ``M`` of a :class:`TokenDispatcher` acts:

    - ``'mlp'``: ``X' = X + Attn(LN1(X))``;
      ``Y = X' + M * MLP(LN2(X')) + Adapter(X')``.
    - ``'attn'``: ``X' = X + M * Attn(LN1(X)) + Adapter(X)`` (queries of
      active tokens, keys/values of all); ``Y = X' + MLP(LN2(X'))``.
    - ``'attn_mlp'``: both of the above, each with its own dispatcher and
      adapter.
    - ``'layer'``: one decision per sample, read from the cls token (the token
      mean without one): ``Y = X + m * (Block(X) - X) + Adapter(X)``.
    - ``None``: no dispatcher, ``Y = X' + MLP(LN2(X')) + Adapter(X')``: the
      adapter-only baseline.

    Prefix tokens are always active. In training the mask multiplies the
    outputs of a dense computation (the straight-through gradient reaches the
    dispatcher); in evaluation only active tokens (or samples) are computed.

    Args:
        embed_dims (int): Token channels.
        num_heads (int): Attention heads.
        mlp_ratio (float): MLP hidden width over ``embed_dims``.
            Defaults to 4.
        qkv_bias (bool): Whether the qkv projection has a bias.
            Defaults to True.
        drop_rate (float): Dropout after the attention and MLP projections.
            Defaults to 0.
        attn_drop_rate (float): Dropout on attention weights. Defaults to 0.
        drop_path_rate (float): Stochastic depth rate. Defaults to 0.
        layer_scale_init_value (float, optional): Layer-scale init value;
            None for no layer scale (timm's ``init_values``). Defaults to None.
        num_prefix_tokens (int): Leading tokens that are always active
            (the cls token). Defaults to 1.
        dispatch (str, optional): One of :data:`DISPATCH_MODES`.
            Defaults to ``'mlp'``.
        dispatcher_cfg (dict, optional): Extra arguments of every
            :class:`TokenDispatcher` (``tau``, ``threshold``).
            Defaults to None.
        adapter_cfg (dict, optional): Config of every adapter (``type`` is
            ``'Adapter'`` or ``'MoEAdapter'``); ``embed_dims`` is filled in.
            Defaults to ``dict(type='Adapter')``.
        rel_pos_bias_grid (tuple[int, int], optional): Add a BEiT-style
            relative position bias (:class:`RelativePositionBias`, zero at
            init, trainable) for this patch grid to the attention logits.
            Defaults to None (no bias).
        window_size (int): ViTDet's windowed attention: attend inside
            windows of this side (:class:`WindowAttention`); 0 for global
            attention. Defaults to 0.
        use_rel_pos (bool): ViTDet's decomposed relative position bias
            (``attn.rel_pos_h``, ``attn.rel_pos_w``; zero at init, trainable).
            Defaults to False.
        rel_pos_input_size (tuple[int, int], optional): The patch grid the
            relative position tables of a global block are made for.
            Defaults to None.
        init_cfg (dict, optional): Initialisation config. Defaults to None.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 mlp_ratio: float = 4.,
                 qkv_bias: bool = True,
                 drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 layer_scale_init_value: Optional[float] = None,
                 num_prefix_tokens: int = 1,
                 dispatch: Optional[str] = 'mlp',
                 dispatcher_cfg: Optional[dict] = None,
                 adapter_cfg: Optional[dict] = None,
                 rel_pos_bias_grid: Optional[Tuple[int, int]] = None,
                 window_size: int = 0,
                 use_rel_pos: bool = False,
                 rel_pos_input_size: Optional[Tuple[int, int]] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.dispatch = check_dispatch(dispatch)
        self.num_prefix_tokens = num_prefix_tokens
        #: Whether attention is ViTDet's (windows and/or decomposed relative
        #: positions over a patch grid, :class:`WindowAttention`).
        self.grid_attention = bool(window_size or use_rel_pos)
        if self.grid_attention:
            check_grid_attention(dispatch, num_prefix_tokens,
                                 rel_pos_bias_grid)
        norm_layer = partial(nn.LayerNorm, eps=1e-6)

        # the pre-trained ViT block, named as in timm
        self.norm1 = norm_layer(embed_dims)
        if self.grid_attention:
            self.attn = WindowAttention(
                embed_dims,
                num_heads=num_heads,
                qkv_bias=qkv_bias,
                attn_drop=attn_drop_rate,
                proj_drop=drop_rate,
                window_size=window_size,
                use_rel_pos=use_rel_pos,
                input_size=rel_pos_input_size)
        else:
            self.attn = Attention(
                embed_dims,
                num_heads=num_heads,
                qkv_bias=qkv_bias,
                attn_drop=attn_drop_rate,
                proj_drop=drop_rate)
        self.rel_pos_bias = RelativePositionBias(
            rel_pos_bias_grid, num_heads, num_prefix_tokens) \
            if rel_pos_bias_grid is not None else None
        self.ls1 = LayerScale(embed_dims, layer_scale_init_value) \
            if layer_scale_init_value else nn.Identity()
        self.drop_path1 = DropPath(drop_path_rate) \
            if drop_path_rate > 0 else nn.Identity()
        self.norm2 = norm_layer(embed_dims)
        self.mlp = Mlp(
            embed_dims,
            hidden_features=int(embed_dims * mlp_ratio),
            act_layer=nn.GELU,
            drop=drop_rate)
        self.ls2 = LayerScale(embed_dims, layer_scale_init_value) \
            if layer_scale_init_value else nn.Identity()
        self.drop_path2 = DropPath(drop_path_rate) \
            if drop_path_rate > 0 else nn.Identity()

        # DyT: a dispatcher and an adapter at each dispatch site
        dispatcher_cfg = dict(dispatcher_cfg or {})
        adapter_cfg = dict(adapter_cfg or dict(type='Adapter'))
        #: ``(site, ...)`` of this block's dispatchers, in mask order.
        self.dispatch_sites = DISPATCH_SITES[dispatch]
        with_adapter = adapter_sites(dispatch)
        for site in SITES:
            setattr(
                self, f'{site}_dispatcher',
                TokenDispatcher(embed_dims, **dispatcher_cfg)
                if site in self.dispatch_sites else None)
            setattr(
                self, f'{site}_adapter',
                build_model(dict(adapter_cfg, embed_dims=embed_dims))
                if site in with_adapter else None)

    def dispatchers(self) -> List[TokenDispatcher]:
        """This block's dispatchers, in mask order."""
        return [
            getattr(self, f'{site}_dispatcher')
            for site in self.dispatch_sites
        ]

    # ------------------------------------------------------ dense updates
    # Residual updates come back in the dtype of the residual stream ``x``:
    # under autocast the sub-layers compute in half precision while the
    # stream stays float32 (and the gathered path's ``index_add`` needs one
    # dtype). Without autocast ``.to`` returns its input.
    @backward_safe_attention_method
    def attn_update(self,
                    x: Tensor,
                    grid: Optional[Tuple[int, int]] = None) -> Tensor:
        """The attention branch's dense update ``LS1(Attn(LN1(x)))`` of
        tokens ``x``, with no dispatch and no adapter.

        Args:
            x (Tensor): Tokens (B, N, C), prefix tokens first.
            grid (tuple[int, int], optional): The patch grid (H, W), for
                windowed (ViTDet) attention. Defaults to None.

        Returns:
            Tensor: The update (B, N, C), in the dtype of ``x``.
        """
        if self.grid_attention:
            return self.ls1(self.attn(self.norm1(x), grid)).to(x.dtype)
        bias = self._attn_bias(x)
        if bias is not None:
            # a 4-D (1, heads, N, N) mask: PyTorch's fused CPU attention
            # takes it, a 3-D one sends SDPA to its 4x slower unfused kernel
            bias = bias[None]
            if is_compiling():
                # the batch may be a data-dependent size (layer dispatch),
                # which a graph cannot broadcast against 1 without a guard
                bias = bias.expand(x.shape[0], -1, -1, -1)
        return self.ls1(self.attn(self.norm1(x), attn_mask=bias)).to(x.dtype)

    def mlp_update(self, x: Tensor) -> Tensor:
        """The MLP branch's dense update ``LS2(MLP(LN2(x)))`` of tokens
        ``x``: what an active token adds to the residual stream.

        Args:
            x (Tensor): Tokens (..., C), any leading shape (a gathered
                (M, C) set of active tokens, say).

        Returns:
            Tensor: The update, shaped as ``x`` and in its dtype.
        """
        return self.ls2(mlp_forward(self.mlp, self.norm2(x))).to(x.dtype)

    def _attn_bias(self, x: Tensor) -> Optional[Tensor]:
        """The relative position bias (heads, N, N) for tokens ``x``, in the
        dtype the attention computes in; None without one."""
        if self.rel_pos_bias is None:
            return None
        self.rel_pos_bias.check_tokens(x.shape[1])
        device = x.device.type
        dtype = autocast_dtype(device) or x.dtype
        return self.rel_pos_bias(dtype)

    def _decide(self, dispatcher: nn.Module, tokens: Tensor,
                complete: bool) -> Tensor:
        """Mask of the dispatched (non-prefix) ``tokens`` (B, M, C)."""
        if complete:
            return tokens.new_ones(tokens.shape[:2])
        return dispatcher(tokens)

    def _token_masks(self, dispatcher: nn.Module, x: Tensor,
                     complete: bool) -> Tuple[Tensor, Tensor]:
        """Masks of tokens ``x`` (B, N, C): of the dispatched tokens
        (B, N - P), and of all tokens (B, N) with the prefix active.

        In evaluation every token is scored and the prefix's decisions are
        overwritten: the scorer reads the contiguous ``x`` as it is, where
        the slice of the dispatched tokens would first be copied.
        """
        prefix = self.num_prefix_tokens
        if complete or self.training:
            mask = self._decide(dispatcher, x[:, prefix:], complete)
            return mask, self._with_prefix(mask)
        full = dispatcher(x)
        if prefix:  # (an empty write would still be a node of an export)
            full[:, :prefix] = 1
        return full[:, prefix:], full

    def _with_prefix(self, mask: Tensor) -> Tensor:
        """Prepend the always-active prefix tokens to a token mask."""
        prefix = mask.new_ones(mask.shape[0], self.num_prefix_tokens)
        return torch.cat([prefix, mask], dim=1)

    # -------------------------------------------------------------- sub-layers
    def _attn_part(self, x: Tensor, complete: bool, masks: List[Tensor],
                   grid: Optional[Tuple[int, int]]) -> Tensor:
        if self.attn_dispatcher is None:
            return x + self.drop_path1(self.attn_update(x, grid))
        mask, full = self._token_masks(self.attn_dispatcher, x, complete)
        masks.append(mask)
        if complete:
            out = x + self.drop_path1(self.attn_update(x, grid))
        elif self.training:
            out = x + self.drop_path1(
                self.attn_update(x, grid) * full[..., None])
        else:
            update = self.ls1(
                query_subset_attention(self.attn, self.norm1(x), full,
                                       self._attn_bias(x))).to(x.dtype)
            out = x.flatten(0, 1).index_add(0, active_index(full),
                                            update).view_as(x)
        # (out is a fresh tensor of this block's: the adapter adds into it)
        return self.attn_adapter.add_to(out, x, inplace=True)

    def _mlp_part(self, x: Tensor, complete: bool,
                  masks: List[Tensor]) -> Tensor:
        dispatcher, adapter = self.mlp_dispatcher, self.mlp_adapter
        full = None  # the mask of all tokens; None: every token is active
        if dispatcher is not None:
            mask, full = self._token_masks(dispatcher, x, complete)
            masks.append(mask)
            if complete:
                full = None
        if not self.training:
            return self._eval_mlp_part(x, full)
        update = self.mlp_update(x)
        if full is not None:
            update = update * full[..., None]
        out = x + self.drop_path2(update)
        return out if adapter is None else adapter.add_to(out, x, inplace=True)

    def _eval_mlp_part(self, x: Tensor, full: Optional[Tensor]) -> Tensor:
        """``x + full * MLP(LN2(x)) + Adapter(x)`` in evaluation; the MLP
        runs on the active tokens of ``full`` (B, N) only, on every token if
        it is None (:func:`~.sparse_ops.gathered_mlp_update`)."""
        return gathered_mlp_update(x, full, self.mlp_update, self.mlp_adapter,
                                   dense=partial(self._dense_mlp, x))

    def _dense_mlp(self, x: Tensor, residual: Callable[[], Tensor]) -> Tensor:
        """``residual() + MLP(LN2(x))`` with every token active: ``fc2`` is
        an ``addmm_`` into the residual (no buffer for its output, no
        separate add), or with a pre-packed ``fc2`` one oneDNN
        matmul-and-add (:func:`~.prepacked_linear.add_linear_`)."""
        if not isinstance(self.ls2, nn.Identity) or \
                autocast_enabled(x.device.type):
            update = self.mlp_update(x)
            return residual().add_(update)
        mlp = self.mlp  # timm's Mlp; its dropouts are off in evaluation
        hidden = mlp.norm(mlp.act(mlp.fc1(self.norm2(x)))).flatten(0, 1)
        return add_linear_(residual().flatten(0, 1), hidden,
                           mlp.fc2).view_as(x)

    def _block_update(self,
                      x: Tensor,
                      grid: Optional[Tuple[int, int]] = None) -> Tensor:
        """``Block(x) - x`` of the whole pre-trained block."""
        attn = self.drop_path1(self.attn_update(x, grid))
        return attn + self.drop_path2(self.mlp_update(x + attn))

    def _layer_forward(self, x: Tensor, complete: bool, masks: List[Tensor],
                       grid: Optional[Tuple[int, int]]) -> Tensor:
        summary = x[:, :1] if self.num_prefix_tokens else x.mean(
            dim=1, keepdim=True)
        mask = self._decide(self.layer_dispatcher, summary, complete)
        masks.append(mask)
        if complete:
            out = x + self._block_update(x, grid)
        elif self.training:
            out = x + mask[..., None] * self._block_update(x, grid)
        else:
            index = active_index(mask)
            out = x.index_add(0, index,
                              self._block_update(x.index_select(0, index),
                                                 grid))
        return self.layer_adapter.add_to(out, x, inplace=True)

    def forward(self,
                x: Tensor,
                complete: bool = False,
                grid: Optional[Tuple[int, int]] = None
                ) -> Tuple[Tensor, List[Tensor]]:
        """Run the block.

        Args:
            x (Tensor): Tokens (B, N, C), prefix tokens first.
            complete (bool): Run every token through every sub-layer (the
                "complete" model of DyT's distillation); the dispatchers are
                not called. Defaults to False.
            grid (tuple[int, int], optional): The patch grid (rows, columns)
                of the tokens; ViTDet attention (``window_size`` or
                ``use_rel_pos``) needs it. Defaults to None.

        Returns:
            tuple[Tensor, list[Tensor]]: The output tokens (B, N, C) and the
            masks of this block's dispatchers, attention first: (B, N - P)
            per token mask, (B, 1) for ``'layer'``. All ones when
            ``complete``.
        """
        masks: List[Tensor] = []
        if self.dispatch == 'layer':
            return self._layer_forward(x, complete, masks, grid), masks
        x = self._attn_part(x, complete, masks, grid)
        x = self._mlp_part(x, complete, masks)
        return x, masks
