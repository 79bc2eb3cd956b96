"""DyTSwinTransformer: mmseg's Swin Transformer with DyT at every FFN."""
import math
from typing import Callable, List, Optional, Tuple

import torch
from mmseg.models.backbones import SwinTransformer
from mmseg.models.backbones.swin import SwinBlock
from torch import Tensor

from mmdyt.registry import build_model, register
from mmdyt.utils.args import suggest_unknown_arguments
from ..layers.dispatcher import TokenDispatcher
from ..layers.dyt_block import DISPATCH_SITES, adapter_sites, check_dispatch
from ..layers.prepacked_linear import prepack_block
from ..layers.sparse_ops import gathered_mlp_update
from .dispatch_api import DispatchAPIMixin
from .frozen_backbone import FrozenBackboneMixin, is_dyt_param

#: Values of ``dispatch`` a Swin block takes: MLP (FFN) dispatch, the
#: paper's choice for Swin, or None (the adapter-only baseline).
SWIN_DISPATCH_MODES = ('mlp', None)


class DyTSwinBlock(SwinBlock):
    """mmseg's ``SwinBlock`` with a token dispatcher and an adapter at its
    FFN (``x' = x + Attn(LN1(x))``; ``y = x' + M * FFN(LN2(x')) +
    Adapter(x')``).

    The FFN works on each token alone, so windows, shifts and padding are
    untouched: in evaluation the FFN runs on the active tokens only (gathered
    over the batch), in training on every token with the mask multiplying
    its output. Made from a built ``SwinBlock`` by :meth:`convert` (its
    parameter names stay mmseg's, so Swin checkpoints load as they are).
    """

    @classmethod
    def convert(cls, block: SwinBlock, dispatch: Optional[str],
                dispatcher_cfg: Optional[dict],
                adapter_cfg: dict) -> 'DyTSwinBlock':
        """Turn a built ``SwinBlock`` into a :class:`DyTSwinBlock` in
        place, adding its dispatcher and adapter."""
        block.__class__ = cls
        channels = block.norm2.normalized_shape[0]
        block.dispatch = dispatch
        #: ``(site, ...)`` of this block's dispatchers, in mask order.
        block.dispatch_sites = DISPATCH_SITES[dispatch]
        block.mlp_dispatcher = TokenDispatcher(
            channels, **(dispatcher_cfg or {})) if dispatch else None
        block.mlp_adapter = build_model(dict(adapter_cfg,
                                             embed_dims=channels)) \
            if 'mlp' in adapter_sites(dispatch) else None
        return block

    def dispatchers(self) -> List[TokenDispatcher]:
        """This block's dispatchers, in mask order."""
        return [self.mlp_dispatcher] if self.mlp_dispatcher else []

    #: No token of a Swin is exempt from dispatch (as in
    #: :class:`DyTBlock`, whose class tokens are).
    num_prefix_tokens = 0

    def attn_update(self, x: Tensor, hw_shape: Tuple[int, int]) -> Tensor:
        """The attention branch's update ``Attn(LN1(x))`` of tokens ``x``
        (B, H*W, C): mmseg's (shifted) window attention.

        Args:
            x (Tensor): Tokens (B, H*W, C).
            hw_shape (tuple[int, int]): The token grid (H, W).
        """
        return self.attn(self.norm1(x), hw_shape)

    def mlp_update(self, x: Tensor) -> Tensor:
        """The dense MLP update ``FFN(LN2(x)) - x`` (mmcv's FFN without its
        residual) of tokens ``x`` (..., C), in the dtype of ``x``: what an
        active token adds to the residual stream.

        Args:
            x (Tensor): Tokens (..., C), any leading shape.
        """
        return self.ffn.dropout_layer(self.ffn.layers(self.norm2(x))).to(
            x.dtype)

    def _mlp_part(self, x: Tensor, complete: bool,
                  masks: List[Tensor]) -> Tensor:
        """``x + M * FFN(LN2(x)) + Adapter(x)``, appending the mask to
        ``masks``; in evaluation the FFN runs on the active tokens only, and
        the updates go into ``x`` (the attention part's fresh output) in
        place unless autograd needs it."""
        mask = None
        if self.mlp_dispatcher is not None:
            mask = x.new_ones(x.shape[:2]) if complete else \
                self.mlp_dispatcher(x)
            masks.append(mask)
            if complete:
                mask = None
        adapter = self.mlp_adapter
        if self.training:
            update = self.mlp_update(x)
            out = x + (update if mask is None else update * mask[..., None])
            return out if adapter is None else adapter.add_to(out, x)
        return gathered_mlp_update(x, mask, self.mlp_update, adapter)

    def forward_with_masks(self, x: Tensor, hw_shape: Tuple[int, int],
                           complete: bool = False
                           ) -> Tuple[Tensor, List[Tensor]]:
        """Run the block on tokens ``x`` (B, H*W, C).

        Returns:
            tuple: The output tokens and this block's masks: one (B, H*W)
            mask with MLP dispatch (all ones when ``complete``), none for
            the adapter-only baseline.
        """
        masks: List[Tensor] = []
        return self._mlp_part(x + self.attn_update(x, hw_shape), complete,
                              masks), masks

    def forward(self, x: Tensor, hw_shape: Tuple[int, int]) -> Tensor:
        return self.forward_with_masks(x, hw_shape)[0]


@register('MODELS', scopes=('mmseg', 'mmdet'))
@suggest_unknown_arguments
class DyTSwinTransformer(FrozenBackboneMixin, DispatchAPIMixin,
                         SwinTransformer):
    """Swin Transformer (mmseg's ``SwinTransformer``) with DyT.

    Every ``SwinBlock`` of every stage gets a token dispatcher and an
    adapter at its FFN (:class:`DyTSwinBlock`); the pre-trained Swin is
    frozen. Parameter names are mmseg's, so mmseg Swin checkpoints (and
    official / timm ones once converted by mmseg's
    ``tools/model_converters/swin2mmseg.py``) load as they are, through
    mmseg's ``init_weights`` (which resizes the relative position bias
    tables to the window size); a checkpoint that leaves Swin weights
    unloaded is an error that names them. Patch merging and window padding
    of odd sizes are mmseg's own.

    The dispatch API is :class:`DyTViT`'s (:class:`DispatchAPIMixin`):
    :attr:`dispatch_sites` are ``(block, 'mlp')`` over the blocks of all
    stages in order, :meth:`forward_with_masks` returns one ``(B, H_s *
    W_s)`` mask per block (the token grid of its stage), and the rate loss
    of the task models averages them all.

    Args:
        dispatch (str, optional): ``'mlp'`` (token dispatch at the FFN) or
            None (the adapter-only baseline). Defaults to ``'mlp'``.
        dispatcher_cfg (dict, optional): Arguments of every
            :class:`TokenDispatcher`. Defaults to None.
        adapter_cfg (dict, optional): Config of every adapter (``Adapter``
            or ``MoEAdapter``). Defaults to
            ``dict(type='Adapter', bottleneck=64)``.
        frozen (bool): Freeze every pre-trained parameter (adapters and
            dispatchers stay trainable). Defaults to True.
        save_trainable_only (bool): Leave the frozen Swin weights out of
            ``state_dict()`` (adapter-only checkpoints, as ``DyTViT``'s:
            loading one completes it from the ``Pretrained`` ``init_cfg``;
            ``tools/model_converters/merge_adapter_checkpoint.py`` makes it
            a full one). Needs ``frozen``. Defaults to False.
        low_precision_weights (bool): Keep low-precision copies of the
            pre-trained linear layers' weights (attention, FFN, patch
            merging) for inference under autocast, as ``DyTViT``'s option
            of that name. Defaults to True.
        **kwargs: The arguments of mmseg's ``SwinTransformer``
            (``embed_dims``, ``depths``, ``num_heads``, ``window_size``,
            ``out_indices``, ``init_cfg``, ...).

    Examples:
        >>> import torch
        >>> model = DyTSwinTransformer(embed_dims=32, depths=(2, 2),
        ...                            num_heads=(1, 2), out_indices=(0, 1))
        >>> [tuple(o.shape) for o in model(torch.randn(1, 3, 64, 64))]
        [(1, 32, 16, 16), (1, 64, 8, 8)]
    """

    #: What the frozen network is (messages, adapter-only metadata).
    BASE_NAME = 'Swin'

    def __init__(self,
                 dispatch: Optional[str] = 'mlp',
                 dispatcher_cfg: Optional[dict] = None,
                 adapter_cfg: Optional[dict] = None,
                 frozen: bool = True,
                 save_trainable_only: bool = False,
                 low_precision_weights: bool = True,
                 **kwargs):
        self._check_frozen_args(frozen, save_trainable_only)
        super().__init__(**kwargs)
        self.dispatch = check_dispatch(dispatch)
        if dispatch not in SWIN_DISPATCH_MODES:
            raise ValueError(
                f'DyTSwinTransformer dispatches at the FFN: dispatch must be '
                f'one of {SWIN_DISPATCH_MODES}, got {dispatch!r}')
        adapter_cfg = dict(adapter_cfg or dict(type='Adapter', bottleneck=64))
        for stage in self.stages:
            for block in stage.blocks:
                DyTSwinBlock.convert(block, dispatch, dispatcher_cfg,
                                     adapter_cfg)
        if low_precision_weights:
            for stage in self.stages:
                for block in stage.blocks:
                    prepack_block(block.attn, names=None, float32=False)
                    prepack_block(block.ffn, names=None, float32=False)
                if stage.downsample is not None:
                    prepack_block(stage.downsample, names=('reduction', ),
                                  float32=False)
        #: Every block of every stage, in order.
        self.blocks = [block for stage in self.stages for block in
                       stage.blocks]
        # each stage's token grid over the first one's (patch merging)
        strides = kwargs.get('strides', (4, 2, 2, 2))
        for i, stage in enumerate(self.stages):
            for block in stage.blocks:
                block.token_stride = math.prod(strides[1:i + 1])
        self.patch_size = self.patch_embed.projection.kernel_size[0]
        self.in_channels = self.patch_embed.projection.in_channels
        size = kwargs.get('pretrain_img_size', 224)
        #: The input size the model is made for (``pretrain_img_size``).
        self.img_size = (size, size) if isinstance(size, int) else \
            tuple(size)
        #: Tokens that are never dispatched (a ViT's cls token): none.
        self.num_prefix_tokens = 0
        self._init_frozen_backbone(frozen, save_trainable_only)
        self._init_dispatch_api()

    def init_weights(self) -> None:
        """mmseg's initialisation (or its loading of a ``Pretrained``
        checkpoint), with the adapters and dispatchers kept as they were
        built: mmseg's trunc-normal init of every Linear would otherwise
        give the adapters a non-zero up-projection."""
        own = {name: p.detach().clone()
               for name, p in self.named_parameters() if is_dyt_param(name)}
        loaded = {}  # mmseg loads with strict=False: check what it left out
        handle = self.register_load_state_dict_post_hook(
            lambda module, keys: loaded.update(missing=keys.missing_keys))
        try:
            super().init_weights()
        finally:
            handle.remove()
        if loaded:
            self._check_pretrained_load(loaded['missing'])
        with torch.no_grad():
            for name, param in self.named_parameters():
                if name in own:
                    param.copy_(own[name])
        if self.frozen:
            self._freeze_pretrained()

    def _check_pretrained_load(self, missing: List[str]) -> None:
        """Fail when the ``Pretrained`` checkpoint left Swin parameters
        unloaded (mmseg loads it with ``strict=False``)."""
        params = {name for name, _ in self.named_parameters()}
        absent = [name for name in missing
                  if name in params and not is_dyt_param(name)]
        if not absent:
            return
        checkpoint = self.init_cfg.get('checkpoint')
        raise ValueError(
            f'init_cfg checkpoint {checkpoint} does not hold {len(absent)} '
            f'of the Swin weights of DyTSwinTransformer (e.g. {absent[:3]}). '
            'Official and timm Swin checkpoints (layers.N.blocks.M..., '
            'patch_embed.proj) need converting first: mmseg\'s '
            'tools/model_converters/swin2mmseg.py SRC DST; otherwise check '
            'embed_dims, depths and num_heads against the checkpoint.')

    def _load_base_checkpoint(self) -> None:
        """Load the ``Pretrained`` checkpoint of ``init_cfg`` through
        mmseg's :meth:`init_weights`."""
        self.init_weights()

    def forward_with_masks(self, x: Tensor, complete: bool = False
                           ) -> Tuple[List[Tensor], List[Tensor]]:
        """mmseg's forward, with the masks of every block.

        Args:
            x (Tensor): Images (N, C, H, W).
            complete (bool): Run every token through every FFN (the
                complete model of DyT's distillation). Defaults to False.

        Returns:
            tuple: The stage outputs of ``out_indices`` (N, C_s, H_s, W_s)
            and the masks in :attr:`dispatch_sites` order.
        """
        masks: List[Tensor] = []

        def run_block(index, block, tokens, hw_shape):
            tokens, block_masks = block.forward_with_masks(tokens, hw_shape,
                                                           complete)
            masks.extend(block_masks)
            return tokens

        outs = self.run_stages(x, run_block)
        self._publish_masks(masks, x, complete)
        return outs, masks

    def run_stages(self, x: Tensor,
                   run_block: Callable[[int, DyTSwinBlock, Tensor,
                                        Tuple[int, int]], Tensor]
                   ) -> List[Tensor]:
        """mmseg's ``SwinTransformer.forward`` with every block run by
        ``run_block(index, block, tokens, hw_shape)`` (``index`` counts the
        blocks of all stages): the patch embedding, the stages with their
        patch merging, the norms and layout of the ``out_indices`` outputs.
        """
        x, hw_shape = self.patch_embed(x)
        if self.use_abs_pos_embed:
            x = x + self.absolute_pos_embed
        x = self.drop_after_pos(x)
        outs, index = [], 0
        for i, stage in enumerate(self.stages):
            for block in stage.blocks:
                x = run_block(index, block, x, hw_shape)
                index += 1
            out, out_hw_shape = x, hw_shape
            if stage.downsample:
                x, hw_shape = stage.downsample(x, hw_shape)
            if i in self.out_indices:
                out = getattr(self, f'norm{i}')(out)
                outs.append(out.view(-1, *out_hw_shape,
                                     self.num_features[i]).permute(
                                         0, 3, 1, 2).contiguous())
        return outs

    def forward(self, x: Tensor, complete: bool = False) -> List[Tensor]:
        return self.forward_with_masks(x, complete)[0]

    def train(self, mode: bool = True) -> 'DyTSwinTransformer':
        """mmseg's ``train`` (frozen stages stay in eval mode), returning
        the module as ``nn.Module.train`` does (mmseg's returns None)."""
        super().train(mode)
        return self
