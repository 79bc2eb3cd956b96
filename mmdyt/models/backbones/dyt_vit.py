"""DyTViT: a frozen ViT adapted with DyT, for images and videos."""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import BaseModule
from timm.layers import PatchEmbed, trunc_normal_
from timm.models.vision_transformer import init_weights_vit_timm
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from mmdyt.registry import LIBRARIES, library_registry, register
from mmdyt.utils.args import (check_arguments, check_call_arguments,
                              suggest_unknown_arguments)
from mmdyt.utils.torch_compat import is_compiling
from ..layers.dispatcher import TokenDispatcher
from ..layers.dyt_block import DyTBlock, check_dispatch
from ..layers.pos_embed import has_cls_entry, resample_pos_embed
from ..layers.prepacked_linear import prepack_block
from .checkpoint_loading import load_vit_checkpoint
from .dispatch_api import DispatchAPIMixin
from .frozen_backbone import FrozenBackboneMixin
from .timm_arch import timm_arch_kwargs

#: ``out_type`` values: what each output of :class:`DyTViT` is.
OUT_TYPES = ('featmap', 'raw', 'cls_token')

__all__ = ['DyTViT', 'OUT_TYPES']


def _registered_model(name: str):
    """The class registered as ``name`` in the MODELS of a library mmdyt
    plugs into, or None."""
    for scope in LIBRARIES:
        cls = library_registry(scope, 'MODELS').get(name)
        if cls is not None:
            return cls
    return None


def check_adapter_and_dispatcher_cfgs(dispatcher_cfg: Optional[dict],
                                      adapter_cfg: Optional[dict]) -> None:
    """Raise a TypeError naming misspelt keys of ``dispatcher_cfg`` and
    ``adapter_cfg`` (or a misspelt adapter type), with the close valid
    names, before any block is built."""
    check_call_arguments("DyTViT's dispatcher_cfg (TokenDispatcher)",
                         TokenDispatcher.__init__, dispatcher_cfg or {},
                         filled=('embed_dims', ))
    adapter_cfg = dict(adapter_cfg or dict(type='Adapter'))
    adapter_type = adapter_cfg.pop('type', None)
    cls = adapter_type if isinstance(adapter_type, type) else \
        _registered_model(adapter_type or 'Adapter')
    if cls is None:
        check_arguments("DyTViT's adapter_cfg", [adapter_type],
                        ('Adapter', 'MoEAdapter'), what='type')
    check_call_arguments(f"DyTViT's adapter_cfg ({cls.__name__})",
                         cls.__init__, adapter_cfg, filled=('embed_dims', ))
    if adapter_type is None:
        raise TypeError("DyTViT's adapter_cfg needs a type, e.g. "
                        "dict(type='Adapter', bottleneck=64)")


@register('MODELS')
@suggest_unknown_arguments
class DyTViT(FrozenBackboneMixin, DispatchAPIMixin, BaseModule):
    """Vision Transformer with Dynamic Tuning (DyT, NeurIPS 2024).

    A pre-trained ViT (timm parameter names, so timm checkpoints load as they
    are) is frozen and adapted by light adapters; a token dispatcher in each
    block lets uninformative tokens skip the block's MLP (or attention, or the
    whole block: ``dispatch``). Skipped tokens stay in the sequence, so dense
    feature maps are intact.

    Images ``(N, C, H, W)`` give a tuple of one output per ``out_indices``.
    Videos ``(N, C, T, H, W)`` are folded into the batch frame by frame (each
    frame a sequence with its own cls token, no temporal embedding) and give
    outputs with a frame axis. With ``out_type``:

    - ``'featmap'``: patch tokens as maps, ``(N, C, H/p, W/p)``; video
      ``(N, C, T, H/p, W/p)``.
    - ``'raw'``: all tokens, prefix first, ``(N, L, C)``; video
      ``(N, T, L, C)``.
    - ``'cls_token'``: ``(N, C)``; video ``(N, T, C)``.

    :meth:`forward_with_masks` returns the outputs together with the masks
    of that forward, one ``(N_images, num_patch_tokens)`` tensor per
    dispatcher (``(N_images, 1)`` for ``'layer'`` dispatch), ordered as
    :attr:`dispatch_sites`; in training they carry the straight-through
    gradient the rate loss needs, so the task models take them from there.
    :attr:`dispatch_masks` keeps the masks of the last dynamic forward (a
    complete forward leaves it alone) for hooks and tools;
    :meth:`activation_rate` is their mean.

    Args:
        arch (str | dict): ``'tiny'``, ``'small'``, ``'base'``, ``'large'``
            (or ``'t'``, ``'s'``, ``'b'``, ``'l'``), or a dict with keys
            ``embed_dims``, ``num_layers``, ``num_heads`` and
            ``feedforward_channels``. Defaults to ``'base'``.
        img_size (int | tuple): Input size the position embedding is made
            for; other sizes (multiples of ``patch_size``) are handled by
            resampling it. Defaults to 224.
        patch_size (int): Patch size. Defaults to 16.
        in_channels (int): Input channels. Defaults to 3.
        out_indices (int | Sequence[int]): Blocks whose outputs are returned;
            negative indices count from the end. Defaults to -1.
        out_type (str): One of :data:`OUT_TYPES`. Defaults to ``'featmap'``.
        final_norm (bool): Apply the final LayerNorm to the last block's
            output. Defaults to False.
        with_cls_token (bool): Whether the ViT has a cls token.
            Defaults to True.
        qkv_bias (bool): Whether the qkv projections have biases.
            Defaults to True.
        drop_rate (float): Dropout after the position embedding and in the
            blocks. Defaults to 0.
        drop_path_rate (float): Stochastic depth, increasing linearly over
            the blocks to this value. Defaults to 0.
        layer_scale_init_value (float, optional): Layer scale of the
            pre-trained ViT, if it has one. Defaults to None.
        dispatch (str, optional): Where the token mask acts: ``'mlp'``,
            ``'attn'``, ``'attn_mlp'``, ``'layer'``, or None for the
            adapter-only baseline. Defaults to ``'mlp'``.
        dispatch_layers (Sequence[int], optional): Blocks that get a
            dispatcher; the others are adapter-only. Defaults to all blocks.
        dispatcher_cfg (dict, optional): Arguments of every
            :class:`TokenDispatcher` (``tau``, ``threshold``).
            Defaults to None.
        adapter_cfg (dict, optional): Config of every adapter, e.g.
            ``dict(type='Adapter', bottleneck=64, scale=0.1)`` or
            ``dict(type='MoEAdapter', num_experts=4)``. Defaults to
            ``dict(type='Adapter')``.
        use_rel_pos_bias (bool): Add a BEiT-style relative position bias
            to every block's attention (for the patch grid of ``img_size``;
            zero at init, trainable like the adapters), as the authors'
            segmentation model has. Inputs must then have ``img_size``.
            Defaults to False.
        window_size (int): ViTDet's windowed attention: every block not in
            ``global_attn_indexes`` attends inside non-overlapping windows of
            this many patches a side (the grid padded to a multiple of it,
            no shift). 0 keeps global attention everywhere. Needs
            ``with_cls_token=False``. Defaults to 0.
        global_attn_indexes (Sequence[int]): Blocks with global attention
            when ``window_size > 0``; ViTDet's ViT-B has ``(2, 5, 8, 11)``.
            Defaults to ().
        use_rel_pos (bool): ViTDet's decomposed relative position bias in
            every block's attention (tables for the window, or for the patch
            grid of ``img_size`` in global blocks; zero at init and
            trainable like the adapters). Needs ``with_cls_token=False``.
            Defaults to False.
        with_cp (bool): Activation checkpointing in training: each block's
            activations are recomputed in the backward pass instead of kept
            (the dispatchers' Gumbel noise is replayed), trading about one
            more forward for memory, as mmseg's and mmdet's backbones offer.
            Defaults to False.
        frozen (bool): Freeze every pre-trained parameter; adapters,
            dispatchers and relative position biases stay trainable.
            Defaults to True.
        save_trainable_only (bool): Leave the frozen ViT weights out of
            ``state_dict()``, so that checkpoints (mmengine's CheckpointHook
            included) hold only what trains, plus the name of the base
            checkpoint (``init_cfg``) in the state dict's metadata. Loading
            such a checkpoint takes the frozen weights from ``init_cfg``'s
            checkpoint, which ``init_weights()`` loads (see
            :mod:`~mmdyt.models.backbones.frozen_backbone`). Needs
            ``frozen=True``. Defaults to False.
        prepack_weights (bool): Pre-pack the weights of the pre-trained
            attention and MLP projections for oneDNN
            (:class:`~mmdyt.models.layers.prepacked_linear.PrepackedLinear`):
            faster CPU float32 inference where a matmul has up to 512
            tokens (one 224 x 224 image; docs/en/benchmarks/speed.md). It
            costs one more copy of those weights in memory, and results
            differ from the plain kernel's by float32 rounding. Training,
            other devices and ``torch.compile`` run as without it; state
            dicts are unchanged. Defaults to False.
        low_precision_weights (bool): In low-precision inference (under
            ``torch.autocast``, as ``tools/test.py --amp`` runs, or with a
            model converted to bfloat16), keep a copy of the pre-trained
            attention and MLP projections' weights in the compute dtype,
            made once and refreshed when the weights change, instead of
            autocast's cast at every call; on a CPU with bfloat16 units it
            is pre-packed for oneDNN and the rows of each matmul run in the
            pieces measured fastest on the machine
            (:class:`~mmdyt.models.layers.prepacked_linear.PrepackedLinear`).
            It costs a bfloat16 copy of those weights in memory. Training
            and float32 run as without it. Defaults to True.
        check_finite (bool, optional): Raise a clear error for NaN or
            infinite inputs. Checking reads a value back from the device,
            which stalls a GPU stream, so by default (None) only inputs on
            the CPU are checked, where that costs one pass over the input;
            True checks on every device, False never. Defaults to None.
        num_reg_tokens (int): Register tokens after the cls token (DINOv2
            with registers): prefix tokens like the cls token, always
            active, never skipped. Defaults to 0.
        no_embed_class (bool): The position embedding covers the patch
            tokens only; the prefix tokens get none (timm's
            ``no_embed_class``, DINOv2 with registers). Defaults to False.
        timm_arch (str, optional): A timm ViT name (e.g.
            ``'vit_base_patch14_reg4_dinov2'``, ``'vit_large_patch16_224'``)
            whose ``arch``, ``patch_size``, ``with_cls_token``,
            ``num_reg_tokens``, ``no_embed_class``,
            ``layer_scale_init_value`` and ``qkv_bias`` replace those
            arguments (:func:`~.timm_arch.timm_arch_kwargs` reads them from
            timm's model definition). ``img_size`` stays the caller's.
            Defaults to None.
        init_cfg (dict, optional): ``dict(type='Pretrained',
            checkpoint=PATH, prefix=None)`` loads a timm-format ViT checkpoint
            (position embedding resampled to ``img_size``). Defaults to None.

    Examples:
        >>> import torch
        >>> model = DyTViT(arch='tiny', img_size=32, out_indices=(1, 3))
        >>> [tuple(o.shape) for o in model(torch.randn(2, 3, 32, 32))]
        [(2, 192, 2, 2), (2, 192, 2, 2)]
        >>> model(torch.randn(1, 3, 4, 32, 32))[0].shape  # video
        torch.Size([1, 192, 4, 2, 2])
        >>> 0 <= model.activation_rate() <= 1
        True
    """

    arch_zoo = {
        **dict.fromkeys(['t', 'tiny'], {
            'embed_dims': 192,
            'num_layers': 12,
            'num_heads': 3,
            'feedforward_channels': 768
        }),
        **dict.fromkeys(['s', 'small'], {
            'embed_dims': 384,
            'num_layers': 12,
            'num_heads': 6,
            'feedforward_channels': 1536
        }),
        **dict.fromkeys(['b', 'base'], {
            'embed_dims': 768,
            'num_layers': 12,
            'num_heads': 12,
            'feedforward_channels': 3072
        }),
        **dict.fromkeys(['l', 'large'], {
            'embed_dims': 1024,
            'num_layers': 24,
            'num_heads': 16,
            'feedforward_channels': 4096
        }),
    }

    def __init__(self,
                 arch: Union[str, dict] = 'base',
                 img_size: Union[int, Tuple[int, int]] = 224,
                 patch_size: int = 16,
                 in_channels: int = 3,
                 out_indices: Union[int, Sequence[int]] = -1,
                 out_type: str = 'featmap',
                 final_norm: bool = False,
                 with_cls_token: bool = True,
                 qkv_bias: bool = True,
                 drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 layer_scale_init_value: Optional[float] = None,
                 dispatch: Optional[str] = 'mlp',
                 dispatch_layers: Optional[Sequence[int]] = None,
                 dispatcher_cfg: Optional[dict] = None,
                 adapter_cfg: Optional[dict] = None,
                 use_rel_pos_bias: bool = False,
                 window_size: int = 0,
                 global_attn_indexes: Sequence[int] = (),
                 use_rel_pos: bool = False,
                 with_cp: bool = False,
                 frozen: bool = True,
                 save_trainable_only: bool = False,
                 prepack_weights: bool = False,
                 low_precision_weights: bool = True,
                 check_finite: Optional[bool] = None,
                 num_reg_tokens: int = 0,
                 no_embed_class: bool = False,
                 timm_arch: Optional[str] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.timm_arch = timm_arch
        if timm_arch is not None:
            settings = timm_arch_kwargs(timm_arch)
            arch, patch_size = settings['arch'], settings['patch_size']
            with_cls_token = settings['with_cls_token']
            num_reg_tokens = settings['num_reg_tokens']
            no_embed_class = settings['no_embed_class']
            layer_scale_init_value = settings['layer_scale_init_value']
            qkv_bias = settings['qkv_bias']
        if not isinstance(num_reg_tokens, int) or num_reg_tokens < 0:
            raise ValueError(f'num_reg_tokens must be an int >= 0, got '
                             f'{num_reg_tokens!r}')
        self._check_frozen_args(frozen, save_trainable_only)
        self.arch_settings = self._parse_arch(arch)
        self.embed_dims = self.arch_settings['embed_dims']
        self.num_layers = self.arch_settings['num_layers']
        if out_type not in OUT_TYPES:
            raise ValueError(
                f'out_type must be one of {OUT_TYPES}, got {out_type!r}')
        if out_type == 'cls_token' and not with_cls_token:
            raise ValueError("out_type='cls_token' needs with_cls_token=True")
        self.out_type = out_type
        self.out_indices = self._parse_indices(out_indices, 'out_indices')
        self.dispatch = check_dispatch(dispatch)
        check_adapter_and_dispatcher_cfgs(dispatcher_cfg, adapter_cfg)
        dispatch_layers = self._parse_indices(
            range(self.num_layers) if dispatch_layers is None else
            dispatch_layers, 'dispatch_layers')
        global_attn_indexes = self._parse_indices(global_attn_indexes,
                                                  'global_attn_indexes')
        if global_attn_indexes and not window_size:
            raise ValueError('global_attn_indexes needs window_size > 0 '
                             '(without windows every block is global)')
        self.window_size = window_size
        self.use_rel_pos = use_rel_pos
        self.with_cp = with_cp
        self.final_norm = final_norm
        self.check_finite = check_finite
        self.num_reg_tokens = num_reg_tokens
        self.num_prefix_tokens = int(with_cls_token) + num_reg_tokens
        self.no_embed_class = no_embed_class
        #: Leading entries of ``pos_embed`` that are not on the patch grid.
        self.pos_embed_prefix = 0 if no_embed_class else \
            self.num_prefix_tokens

        self.img_size = (img_size, img_size) if isinstance(img_size,
                                                           int) else tuple(
                                                               img_size)
        self.patch_size = patch_size
        self.patch_embed = PatchEmbed(
            img_size=self.img_size,
            patch_size=patch_size,
            in_chans=in_channels,
            embed_dim=self.embed_dims,
            strict_img_size=False)
        self.in_channels = in_channels
        self.patch_grid = tuple(self.patch_embed.grid_size)
        self.cls_token = nn.Parameter(torch.zeros(
            1, 1, self.embed_dims)) if with_cls_token else None
        self.reg_token = nn.Parameter(torch.zeros(
            1, num_reg_tokens, self.embed_dims)) if num_reg_tokens else None
        self.pos_embed = nn.Parameter(
            torch.zeros(1, self.pos_embed_prefix + int(np.prod(
                self.patch_grid)), self.embed_dims))
        self.drop_after_pos = nn.Dropout(drop_rate)

        dpr = np.linspace(0, drop_path_rate, self.num_layers)
        self.blocks = nn.ModuleList([
            DyTBlock(
                embed_dims=self.embed_dims,
                num_heads=self.arch_settings['num_heads'],
                mlp_ratio=self.arch_settings['feedforward_channels'] /
                self.embed_dims,
                qkv_bias=qkv_bias,
                drop_rate=drop_rate,
                drop_path_rate=float(dpr[i]),
                layer_scale_init_value=layer_scale_init_value,
                num_prefix_tokens=self.num_prefix_tokens,
                dispatch=dispatch if i in dispatch_layers else None,
                dispatcher_cfg=dispatcher_cfg,
                adapter_cfg=adapter_cfg,
                rel_pos_bias_grid=self.patch_grid if use_rel_pos_bias else
                None,
                window_size=0 if i in global_attn_indexes else window_size,
                use_rel_pos=use_rel_pos,
                rel_pos_input_size=self.patch_grid)
            for i in range(self.num_layers)
        ])
        self.norm = nn.LayerNorm(self.embed_dims, eps=1e-6) \
            if final_norm else None
        if prepack_weights or low_precision_weights:
            for block in self.blocks:
                prepack_block(block, float32=prepack_weights,
                              low_precision=low_precision_weights)

        self._init_vit_weights()
        self._init_frozen_backbone(frozen, save_trainable_only)
        self._register_load_state_dict_pre_hook(self._resample_pos_embed_hook)
        self._init_dispatch_api()

    # ----------------------------------------------------------- construction
    def _parse_arch(self, arch: Union[str, dict]) -> Dict[str, int]:
        if isinstance(arch, str):
            if arch.lower() not in self.arch_zoo:
                raise ValueError(
                    f'arch {arch!r} is not one of '
                    f'{sorted(set(self.arch_zoo))}; pass a dict for a custom '
                    'size')
            return dict(self.arch_zoo[arch.lower()])
        if not isinstance(arch, dict):
            raise ValueError(f'arch must be a str or a dict, got {arch!r}')
        required = {
            'embed_dims', 'num_layers', 'num_heads', 'feedforward_channels'
        }
        missing = required - set(arch)
        if missing:
            raise ValueError(f'custom arch {arch} lacks the keys '
                             f'{sorted(missing)}; it needs {sorted(required)}')
        return dict(arch)

    def _parse_indices(self, indices: Union[int, Sequence[int]],
                       name: str) -> List[int]:
        """Normalise block indices, allowing negative ones."""
        if isinstance(indices, int):
            indices = [indices]
        result = []
        for index in indices:
            if not -self.num_layers <= index < self.num_layers:
                raise ValueError(
                    f'{name} contains {index}, outside the '
                    f'{self.num_layers} blocks of this ViT (valid: '
                    f'{-self.num_layers}..{self.num_layers - 1})')
            result.append(index % self.num_layers)
        return sorted(set(result))

    def _init_vit_weights(self) -> None:
        """timm's ViT initialisation (``init_weights_vit_timm``), for the
        pre-trained parts only."""
        trunc_normal_(self.pos_embed, std=.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        if self.reg_token is not None:
            nn.init.normal_(self.reg_token, std=1e-6)
        for block in self.blocks:
            for module in (*block.attn.modules(), *block.mlp.modules()):
                init_weights_vit_timm(module)

    def _resample_pos_embed_hook(self, state_dict: dict, prefix: str, *args,
                                 **kwargs) -> None:
        """Resample a loaded position embedding to this model's grid.

        A ``load_state_dict`` pre-hook, so that every loader (``init_cfg``,
        ``load_checkpoint``, resume) gets it.
        """
        name = prefix + 'pos_embed'
        if name not in state_dict or \
                state_dict[name].shape == self.pos_embed.shape:
            return
        pos_embed = state_dict[name]
        if pos_embed.dim() != 3 or pos_embed.shape[2] != self.embed_dims:
            raise ValueError(
                f'cannot load a position embedding of shape '
                f'{tuple(pos_embed.shape)} into {tuple(self.pos_embed.shape)}'
                ': expected (1, prefix + side**2, embed_dims)')
        if not self.pos_embed_prefix and has_cls_entry(pos_embed):
            # a ViT pre-trained with a cls token, used without (ViTDet)
            pos_embed = pos_embed[:, 1:]
            print_log('Dropped the cls token\'s entry of the loaded '
                      'pos_embed: this DyTViT has no cls token.',
                      logger='current')
            if pos_embed.shape == self.pos_embed.shape:
                state_dict[name] = pos_embed
                return
        state_dict[name] = resample_pos_embed(pos_embed, self.patch_grid,
                                              self.pos_embed_prefix)
        side = int(round((pos_embed.shape[1] - self.pos_embed_prefix)**0.5))
        print_log(
            f'Resampled pos_embed from a {side}x{side} to a '
            f'{self.patch_grid[0]}x{self.patch_grid[1]} patch grid.',
            logger='current')

    def _adapter_only_metadata(self) -> dict:
        """The position embedding's grid, to resample the base's."""
        return dict(patch_grid=list(self.patch_grid),
                    num_prefix_tokens=self.num_prefix_tokens)

    def _load_base_checkpoint(self) -> None:
        """Load the ``Pretrained`` checkpoint of ``init_cfg`` (a
        timm-format ViT)."""
        load_vit_checkpoint(
            self, self.init_cfg['checkpoint'],
            prefix=self.init_cfg.get('prefix'))

    def init_weights(self) -> None:
        """Load the ``Pretrained`` checkpoint of ``init_cfg``, if any."""
        if self.load_pretrained():
            self._is_init = True
        else:
            super().init_weights()

    # ----------------------------------------------------------------- forward
    def _check_input(self, x: Tensor) -> None:
        if x.dim() not in (4, 5):
            raise ValueError(
                'DyTViT expects images (N, C, H, W) or videos (N, C, T, H, '
                f'W), got a tensor of shape {tuple(x.shape)}')
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f'DyTViT expects {self.in_channels} input channels (dim 1), '
                f'got shape {tuple(x.shape)}')
        if self._should_check_finite(x) and not bool(x.sum().isfinite()):
            bad = int((~torch.isfinite(x)).sum())
            problem = (f'{bad} NaN or infinite values (of {x.numel()})'
                       if bad else 'values so large that their sum overflows')
            raise ValueError(
                f'DyTViT input of shape {tuple(x.shape)} has {problem}: '
                'check the data (a corrupt image or frame?) and the '
                'preprocessing (e.g. a zero std in the normaliser)')
        height, width = x.shape[-2:]
        if (height < self.patch_size or width < self.patch_size
                or height % self.patch_size or width % self.patch_size):
            raise ValueError(
                f'input size {height}x{width} is not a positive multiple of '
                f'the patch size {self.patch_size}; resize or pad the input '
                '(e.g. a size_divisor in the data preprocessor)')

    def _should_check_finite(self, x: Tensor) -> bool:
        """Whether to check ``x`` for NaN/Inf (see ``check_finite``): one
        reduction, read back only where that costs no device sync."""
        if torch.jit.is_tracing() or is_compiling():
            return False
        if self.check_finite is None:
            return x.device.type == 'cpu'
        return self.check_finite

    def add_pos_embed(self, x: Tensor, grid: Tuple[int, int]) -> Tensor:
        """Prepend the prefix tokens (class, registers) to patch tokens and
        add the position embedding, resampled to ``grid`` if it differs
        from the pre-training grid (timm's ``_pos_embed``).

        Args:
            x (Tensor): Patch tokens (B, H*W, C) of :attr:`patch_embed`.
            grid (tuple[int, int]): Their grid (H, W).

        Returns:
            Tensor: The tokens (B, P + H*W, C) the first block takes.
        """
        pos_embed = self.pos_embed
        if grid != self.patch_grid:
            pos_embed = resample_pos_embed(pos_embed, grid,
                                           self.pos_embed_prefix,
                                           old_grid=self.patch_grid)
        # timm's order: cls, registers, patches; with no_embed_class the
        # position embedding is added to the patches only
        prefix = [t.expand(x.shape[0], -1, -1)
                  for t in (self.cls_token, self.reg_token) if t is not None]
        if self.no_embed_class:
            x = x + pos_embed
            return self.drop_after_pos(torch.cat(prefix + [x], dim=1))
        if prefix:
            x = torch.cat(prefix + [x], dim=1)
        return self.drop_after_pos(x + pos_embed)

    def _format(self, x: Tensor, grid: Tuple[int, int],
                num_frames: Optional[int]) -> Tensor:
        if self.out_type == 'raw':
            out = x
        elif self.out_type == 'cls_token':
            out = x[:, 0]
        else:
            patches = x[:, self.num_prefix_tokens:]
            out = patches.transpose(1, 2).reshape(x.shape[0], -1, *grid)
        if num_frames is None:
            return out
        out = out.unflatten(0, (-1, num_frames))
        if self.out_type == 'featmap':  # (N, T, C, h, w) -> (N, C, T, h, w)
            out = out.transpose(1, 2)
        return out

    def forward_with_masks(self,
                           x: Tensor,
                           complete: bool = False
                           ) -> Tuple[Tuple[Tensor], List[Tensor]]:
        """Run the backbone and return its outputs with this forward's masks.

        Args:
            x (Tensor): Images (N, C, H, W) or videos (N, C, T, H, W).
            complete (bool): Run every token through every block (the
                "complete" model, DyT's distillation teacher): no token is
                skipped and the dispatchers are not called. Defaults to False.

        Returns:
            tuple: The outputs, one per ``out_indices`` (see ``out_type``),
            and the masks of every dispatcher in :attr:`dispatch_sites`
            order (all ones when ``complete``). The masks of a dynamic
            forward are also kept in :attr:`dispatch_masks`; a complete
            forward does not touch them.
        """
        self._check_input(x)
        inputs, num_frames = x, None
        if x.dim() == 5:
            num_frames = x.shape[2]
            x = x.transpose(1, 2).flatten(0, 1)
        grid = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
        x = self.add_pos_embed(self.patch_embed(x), grid)

        masks: List[Tensor] = []
        outs = []
        checkpointed = self.with_cp and self.training and \
            torch.is_grad_enabled()
        for i, block in enumerate(self.blocks[:self.out_indices[-1] + 1]):
            if checkpointed:
                x, block_masks = checkpoint(block, x, complete, grid,
                                            use_reentrant=False)
            else:
                x, block_masks = block(x, complete=complete, grid=grid)
            masks.extend(block_masks)
            if i == self.num_layers - 1 and self.norm is not None:
                x = self.norm(x)
            if i in self.out_indices:
                outs.append(self._format(x, grid, num_frames))
        self._publish_masks(masks, inputs, complete)
        return tuple(outs), masks

    def forward(self, x: Tensor, complete: bool = False) -> Tuple[Tensor]:
        """Run the backbone (see :meth:`forward_with_masks`).

        Args:
            x (Tensor): Images (N, C, H, W) or videos (N, C, T, H, W).
            complete (bool): Run the complete model (no token skipped).
                Defaults to False.

        Returns:
            tuple[Tensor]: One output per ``out_indices`` (see ``out_type``).
        """
        return self.forward_with_masks(x, complete)[0]
