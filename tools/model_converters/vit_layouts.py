"""Convert ViT checkpoints of other layouts to DyTViT's (timm's) keys.

DyTViT loads timm-format ViT weights (``blocks.N.attn.qkv``,
``blocks.N.mlp.fc1``, ...). This maps the OpenMMLab and MAE layouts onto
them; ``convert_checkpoint.py`` beside it is the command line. Formats
(:data:`SOURCE_FORMATS`), with the source modules they were written from:

``mmseg-vit`` (mmseg 1.x ``VisionTransformer``,
``mmseg/models/backbones/vit.py``)::

    patch_embed.projection.*             -> patch_embed.proj.*
    layers.N.ln1.* / ln2.*               -> blocks.N.norm1.* / norm2.*
    layers.N.attn.attn.in_proj_weight    -> blocks.N.attn.qkv.weight (q, k, v)
    layers.N.attn.attn.in_proj_bias      -> blocks.N.attn.qkv.bias
    layers.N.attn.attn.out_proj.*        -> blocks.N.attn.proj.*
    layers.N.ffn.layers.0.0.*            -> blocks.N.mlp.fc1.*
    layers.N.ffn.layers.1.*              -> blocks.N.mlp.fc2.*
    ln1.* (final_norm)                   -> norm.*
    ln_pre.* (pre_norm)                  unconvertible: DyTViT has no pre-norm

``mmpretrain-vit`` (mmpretrain 1.x ``VisionTransformer``,
``mmpretrain/models/backbones/vision_transformer.py``): as ``mmseg-vit``
but ``layers.N.attn.qkv.*`` / ``layers.N.attn.proj.*`` (already timm's),
layer scale ``layers.N.attn.gamma1.weight`` / ``layers.N.ffn.gamma2.weight``
-> ``blocks.N.ls1.gamma`` / ``ls2.gamma``; ``ln1`` is the final norm,
``ln2`` the norm of ``out_type='avg_featmap'`` (dropped), ``pre_norm``
unconvertible.

``mmseg-mae`` (mmseg ``MAE``/``BEiT``-style layers, ``mae.py``, ``beit.py``):
``layers.N.gamma_1`` / ``gamma_2`` -> ``blocks.N.ls1.gamma`` / ``ls2.gamma``;
``attn.qkv.*`` and ``attn.proj.*`` as timm's, or BEiT's ``attn.q_bias`` and
``attn.v_bias`` -> ``attn.qkv.bias = cat(q_bias, 0, v_bias)``; the relative
position bias table is dropped if it is zero (MAE initialises it so), else
unconvertible (DyTViT has absolute position embeddings only).

``mae`` (the original MAE / timm layout, facebookresearch/mae): already
timm's keys; the decoder (``decoder_*``, ``mask_token``) and classifier
(``head``, ``fc_norm``) are dropped.

``videomae`` (mmaction2 ``VisionTransformer``,
``mmaction/models/backbones/vit_mae.py``)::

    patch_embed.projection.weight (C, 3, t, p, p)  -> patch_embed.proj.weight
        summed over the t frames of a tubelet: (C, 3, p, p)
    pos_embed (1, T/t * h * w, C), sine         -> pos_embed (1, h * w, C):
        the first temporal slot
    blocks.N.norm1/norm2, attn.qkv.weight, attn.proj  -> the same names
    blocks.N.attn.q_bias, v_bias                -> attn.qkv.bias (k bias 0)
    blocks.N.gamma_1 / gamma_2                  -> blocks.N.ls1 / ls2.gamma
    blocks.N.mlp.layers.0.0 / layers.1          -> blocks.N.mlp.fc1 / fc2
    norm (use_mean_pooling=False)               -> norm
    fc_norm (use_mean_pooling=True)             dropped (pooled feature)

VideoMAE attends jointly over space and time on tubelet tokens without a
cls token; DyTViT runs each frame on its own (``with_cls_token=False``).
The two are the same network exactly for a static clip of ``t`` frames
(one tubelet in time): the summed kernel on one frame equals the 3D kernel
on ``t`` copies of it, and the only temporal position is slot 0. Otherwise
the conversion is an approximation: each frame is embedded as if it were
repeated ``t`` times, at temporal position 0, and attends only within
itself (the frames are joined by DyT's video head instead).

Keys matching no rule are reported as unconvertible, so that a checkpoint
of another layout fails loudly instead of loading half its weights.
"""
import math
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Tuple, Union

import torch
from mmaction.models.backbones.vit_mae import get_sinusoid_encoding
from torch import Tensor

from mmdyt.models.backbones.checkpoint_layouts import (detect_layout,
                                                       strip_backbone_prefix)

#: Layouts :func:`convert_vit_checkpoint` reads.
SOURCE_FORMATS = ('mmseg-vit', 'mmpretrain-vit', 'mmseg-mae', 'mae',
                  'videomae')
#: DyTViT ``arch`` names by (embed_dims, num_layers, feedforward_channels).
STANDARD_ARCHS = {
    (192, 12, 768): 'tiny',
    (384, 12, 1536): 'small',
    (768, 12, 3072): 'base',
    (1024, 24, 4096): 'large',
}


@dataclass
class Drop:
    """Rule action: the key is not part of DyTViT's ViT (a head, a
    decoder...); ``reason`` says what it is."""
    reason: str


@dataclass
class Unconvertible:
    """Rule action: the key holds something DyTViT cannot represent."""
    reason: str


Action = Union[str, Drop, Unconvertible, Callable[[str, Tensor], Any]]
Rule = Tuple[str, Action]


def _zero_rel_pos_bias(key: str, value: Tensor) -> Union[Drop, Unconvertible]:
    if value.abs().max() == 0:
        return Drop('relative position bias, all zero (no effect)')
    return Unconvertible(
        'relative position bias with non-zero values: DyTViT has absolute '
        'position embeddings only')


_NORMS = [
    (r'^layers\.(\d+)\.ln1\.(weight|bias)$', r'blocks.\1.norm1.\2'),
    (r'^layers\.(\d+)\.ln2\.(weight|bias)$', r'blocks.\1.norm2.\2'),
]
_FFN = [
    (r'^(?:layers|blocks)\.(\d+)\.(?:ffn|mlp)\.layers\.0\.0\.(weight|bias)$',
     r'blocks.\1.mlp.fc1.\2'),
    (r'^(?:layers|blocks)\.(\d+)\.(?:ffn|mlp)\.layers\.1\.(weight|bias)$',
     r'blocks.\1.mlp.fc2.\2'),
]
_TOKENS = [(r'^cls_token$', 'cls_token'), (r'^pos_embed$', 'pos_embed'),
           (r'^patch_embed\.projection\.(weight|bias)$',
            r'patch_embed.proj.\1')]
_HEADS = [(r'^head\.', Drop('classifier head')),
          (r'^(?:cls_head|decode_head|auxiliary_head|neck|data_preprocessor)'
           r'\.', Drop('outside the backbone'))]

#: The key maps: (regex, action) tried in order; the first match decides.
RULES: Dict[str, List[Rule]] = {
    'mmseg-vit': [
        *_TOKENS, *_NORMS, *_FFN,
        (r'^layers\.(\d+)\.attn\.attn\.in_proj_(weight|bias)$',
         r'blocks.\1.attn.qkv.\2'),
        (r'^layers\.(\d+)\.attn\.attn\.out_proj\.(weight|bias)$',
         r'blocks.\1.attn.proj.\2'),
        (r'^ln1\.(weight|bias)$', r'norm.\1'),
        (r'^ln_pre\.', Unconvertible(
            'LayerNorm before the blocks (pre_norm=True): DyTViT has none')),
        *_HEADS,
    ],
    'mmpretrain-vit': [
        *_TOKENS, *_NORMS, *_FFN,
        (r'^layers\.(\d+)\.attn\.(qkv|proj)\.(weight|bias)$',
         r'blocks.\1.attn.\2.\3'),
        (r'^layers\.(\d+)\.attn\.gamma1\.weight$', r'blocks.\1.ls1.gamma'),
        (r'^layers\.(\d+)\.ffn\.gamma2\.weight$', r'blocks.\1.ls2.gamma'),
        (r'^ln1\.(weight|bias)$', r'norm.\1'),
        (r'^ln2\.', Drop("norm of the pooled feature (out_type="
                         "'avg_featmap')")),
        (r'^pre_norm\.', Unconvertible(
            'LayerNorm before the blocks (pre_norm=True, CLIP): DyTViT has '
            'none')),
        *_HEADS,
    ],
    'mmseg-mae': [
        *_TOKENS, *_NORMS, *_FFN,
        (r'^layers\.(\d+)\.attn\.(qkv|proj)\.(weight|bias)$',
         r'blocks.\1.attn.\2.\3'),
        (r'^layers\.(\d+)\.attn\.(q_bias|v_bias)$', r'blocks.\1.attn.\2'),
        (r'^layers\.(\d+)\.gamma_1$', r'blocks.\1.ls1.gamma'),
        (r'^layers\.(\d+)\.gamma_2$', r'blocks.\1.ls2.gamma'),
        (r'^layers\.(\d+)\.attn\.relative_position_bias_table$',
         _zero_rel_pos_bias),
        (r'^layers\.(\d+)\.attn\.relative_position_index$',
         Drop('relative position index (a constant buffer)')),
        (r'^rel_pos_bias\.relative_position_bias_table$', _zero_rel_pos_bias),
        (r'^rel_pos_bias\.relative_position_index$',
         Drop('relative position index (a constant buffer)')),
        (r'^ln1\.(weight|bias)$', r'norm.\1'),
        *_HEADS,
    ],
    'mae': [
        (r'^(cls_token|pos_embed)$', r'\1'),
        (r'^patch_embed\.proj\.(weight|bias)$', r'patch_embed.proj.\1'),
        (r'^blocks\.(\d+)\.(norm1|norm2)\.(weight|bias)$',
         r'blocks.\1.\2.\3'),
        (r'^blocks\.(\d+)\.attn\.(qkv|proj)\.(weight|bias)$',
         r'blocks.\1.attn.\2.\3'),
        (r'^blocks\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)$',
         r'blocks.\1.mlp.\2.\3'),
        (r'^blocks\.(\d+)\.ls([12])\.gamma$', r'blocks.\1.ls\2.gamma'),
        (r'^norm\.(weight|bias)$', r'norm.\1'),
        (r'^(decoder_|mask_token)', Drop('MAE decoder (pre-training only)')),
        (r'^fc_norm\.', Drop('norm of the pooled feature (global_pool)')),
        *_HEADS,
    ],
    'videomae': [
        (r'^pos_embed$', 'pos_embed'),
        (r'^patch_embed\.projection\.(weight|bias)$',
         r'patch_embed.proj.\1'),
        (r'^blocks\.(\d+)\.(norm1|norm2)\.(weight|bias)$',
         r'blocks.\1.\2.\3'),
        (r'^blocks\.(\d+)\.attn\.(qkv|proj)\.(weight|bias)$',
         r'blocks.\1.attn.\2.\3'),
        (r'^blocks\.(\d+)\.attn\.(q_bias|v_bias)$', r'blocks.\1.attn.\2'),
        (r'^blocks\.(\d+)\.gamma_1$', r'blocks.\1.ls1.gamma'),
        (r'^blocks\.(\d+)\.gamma_2$', r'blocks.\1.ls2.gamma'),
        *_FFN,
        (r'^norm\.(weight|bias)$', r'norm.\1'),
        (r'^fc_norm\.', Drop('norm of the mean-pooled feature '
                             '(use_mean_pooling=True)')),
        (r'^(decoder|mask_token|encoder_to_decoder)',
         Drop('VideoMAE decoder (pre-training only)')),
        *_HEADS,
    ],
}


@dataclass
class ConversionResult:
    """What :func:`convert_vit_checkpoint` made of a checkpoint.

    Attributes:
        state_dict (dict): The converted weights, DyTViT (timm) keys.
        dropped (dict): Source keys left out on purpose, with what they are.
        unconvertible (dict): Source keys DyTViT cannot represent (or that
            match no rule of the format), with why.
        backbone_args (dict): DyTViT arguments the weights need.
        notes (list[str]): Approximations made.
    """
    state_dict: Dict[str, Tensor]
    dropped: Dict[str, str] = field(default_factory=dict)
    unconvertible: Dict[str, str] = field(default_factory=dict)
    backbone_args: Dict[str, Any] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)

    def check(self) -> None:
        """Raise a ValueError listing the unconvertible keys, if any."""
        if self.unconvertible:
            lines = [f'  {k}: {why}' for k, why in
                     sorted(self.unconvertible.items())[:20]]
            more = len(self.unconvertible) - len(lines)
            raise ValueError(
                f'{len(self.unconvertible)} keys cannot be converted to '
                'DyTViT:\n' + '\n'.join(lines) +
                (f'\n  ... and {more} more' if more > 0 else ''))


def _apply_rules(state_dict: Dict[str, Tensor], rules: List[Rule],
                 result: ConversionResult) -> None:
    for key, value in state_dict.items():
        for pattern, action in rules:
            match = re.search(pattern, key)
            if not match:
                continue
            if callable(action):
                action = action(key, value)
            if isinstance(action, Drop):
                result.dropped[key] = action.reason
            elif isinstance(action, Unconvertible):
                result.unconvertible[key] = action.reason
            else:
                result.state_dict[match.expand(action)] = value
            break
        else:
            result.unconvertible[key] = 'matches no rule of this format'


def _merge_qv_bias(result: ConversionResult) -> None:
    """BEiT/VideoMAE ``q_bias`` + ``v_bias`` -> ``qkv.bias`` (k bias 0)."""
    state_dict = result.state_dict
    for key in [k for k in state_dict if k.endswith('.attn.q_bias')]:
        base = key[:-len('q_bias')]
        q_bias = state_dict.pop(key)
        v_bias = state_dict.pop(base + 'v_bias', None)
        if v_bias is None:
            result.unconvertible[key] = 'q_bias without v_bias'
            continue
        state_dict[base + 'qkv.bias'] = torch.cat(
            [q_bias, torch.zeros_like(q_bias), v_bias])
    for key in [k for k in state_dict if k.endswith('.attn.v_bias')]:
        state_dict.pop(key)
        result.unconvertible[key] = 'v_bias without q_bias'


def _videomae_to_frames(result: ConversionResult, img_size: int) -> None:
    """Tubelet kernel -> 2D kernel; space-time pos-embed -> slot 0."""
    state_dict = result.state_dict
    weight = state_dict.get('patch_embed.proj.weight')
    if weight is None or weight.dim() != 5:
        raise ValueError('a VideoMAE checkpoint needs the Conv3d patch '
                         'embedding patch_embed.projection.weight (C, 3, t, '
                         'p, p)')
    tubelet, patch = weight.shape[2], weight.shape[-1]
    state_dict['patch_embed.proj.weight'] = weight.sum(dim=2)
    grid = img_size // patch
    positions = grid * grid
    pos_embed = state_dict.get('pos_embed')
    dims = weight.shape[0]
    if pos_embed is None:
        state_dict['pos_embed'] = get_sinusoid_encoding(positions, dims)
        result.notes.append(
            f'pos_embed not in the checkpoint: made VideoMAE\'s sine encoding '
            f'for a {grid}x{grid} grid')
    else:
        if pos_embed.shape[1] % positions:
            raise ValueError(
                f'VideoMAE pos_embed has {pos_embed.shape[1]} positions, not '
                f'a multiple of the {grid}x{grid} grid of img_size '
                f'{img_size}: pass the img_size the model was trained at')
        state_dict['pos_embed'] = pos_embed[:, :positions]
    result.notes.append(
        f'Tubelet patch embedding (t={tubelet}) summed into a 2D patch '
        'embedding and the first temporal slot of the position embedding '
        'kept: exact for a static clip of t frames; otherwise each frame is '
        'embedded as if repeated t times and attends only within itself.')
    result.backbone_args.update(with_cls_token=False, img_size=img_size)


def _backbone_args(result: ConversionResult) -> None:
    state_dict, args = result.state_dict, result.backbone_args
    weight = state_dict.get('patch_embed.proj.weight')
    if weight is not None and 'patch_embed.proj.bias' not in state_dict:
        # mmseg's ViT has patch_bias=False by default; DyTViT's has one
        state_dict['patch_embed.proj.bias'] = weight.new_zeros(weight.shape[0])
        result.notes.append('patch embedding without bias: a zero bias added')
    if weight is not None:
        args.update(patch_size=weight.shape[-1], in_channels=weight.shape[1])
        dims = weight.shape[0]
        layers = {int(m.group(1)) for k in state_dict
                  for m in [re.match(r'blocks\.(\d+)\.', k)] if m}
        fc1 = state_dict.get('blocks.0.mlp.fc1.weight')
        size = (dims, len(layers), None if fc1 is None else fc1.shape[0])
        if size in STANDARD_ARCHS:
            args['arch'] = STANDARD_ARCHS[size]
        else:
            args['arch'] = dict(
                embed_dims=dims, num_layers=size[1], num_heads=None,
                feedforward_channels=size[2])
            result.notes.append(
                'arch: num_heads is not stored in the weights; set it as in '
                'the source model')
    args.setdefault('with_cls_token', 'cls_token' in state_dict)
    pos_embed = state_dict.get('pos_embed')
    if pos_embed is not None and 'img_size' not in args and weight is not None:
        side = math.isqrt(pos_embed.shape[1] - int(args['with_cls_token']))
        args['img_size'] = side * weight.shape[-1]
    args['qkv_bias'] = 'blocks.0.attn.qkv.bias' in state_dict
    if any(k.endswith('.ls1.gamma') for k in state_dict):
        args['layer_scale_init_value'] = 0.1  # any value: weights replace it
    args['final_norm'] = 'norm.weight' in state_dict


def convert_vit_checkpoint(state_dict: Dict[str, Tensor],
                           src_format: str = 'auto',
                           img_size: int = 224) -> ConversionResult:
    """Map a ViT state dict of ``src_format`` onto DyTViT's keys.

    Args:
        state_dict (dict): The source weights; a ``backbone.`` (or
            ``encoder.``) prefix of whole-model checkpoints is removed and
            everything outside it dropped.
        src_format (str): One of :data:`SOURCE_FORMATS`, or ``'auto'`` to
            detect it. Defaults to ``'auto'``.
        img_size (int): VideoMAE only: the input size, to take the first
            temporal slot out of the space-time position embedding.
            Defaults to 224.

    Returns:
        ConversionResult: Converted weights and reports; call
        :meth:`ConversionResult.check` to raise on unconvertible keys.

    Raises:
        ValueError: If the format is unknown or cannot be detected.
    """
    weights, dropped = strip_backbone_prefix(state_dict)
    if src_format == 'auto':
        src_format = detect_layout(weights)
        if src_format == 'timm':
            raise ValueError(
                'this is already a timm-format ViT: DyTViT loads it as it is '
                "(init_cfg=dict(type='Pretrained', checkpoint=...))")
        if src_format is None:
            raise ValueError(
                f'cannot tell the layout of this checkpoint (keys like '
                f'{sorted(weights)[:4]}); pass --src-format, one of '
                f'{SOURCE_FORMATS}')
    if src_format not in RULES:
        raise ValueError(f'src_format must be one of {SOURCE_FORMATS} or '
                         f"'auto', got {src_format!r}")
    result = ConversionResult(state_dict=OrderedDict(), dropped=dropped)
    result.backbone_args['src_format'] = src_format
    _apply_rules(weights, RULES[src_format], result)
    _merge_qv_bias(result)
    if src_format == 'videomae':
        _videomae_to_frames(result, img_size)
    _backbone_args(result)
    result.backbone_args.pop('src_format')
    return result
