"""DyTViT settings read from a timm ViT architecture name.

``DyTViT(timm_arch='vit_base_patch14_reg4_dinov2')`` takes the embedding
width, depth, heads, MLP width, patch size, prefix tokens (cls and
registers), position-embedding layout and layer scale from timm's own model
definition, so that they are not retyped (and cannot be mistyped) in a
config. The model is built on the ``meta`` device: no memory, no weights.
"""
from typing import Dict

import torch
import torch.nn as nn

#: DyTViT arguments a timm architecture sets (see :func:`timm_arch_kwargs`).
TIMM_ARCH_KEYS = ('arch', 'patch_size', 'with_cls_token', 'num_reg_tokens',
                  'no_embed_class', 'layer_scale_init_value', 'qkv_bias')


def timm_arch_kwargs(name: str) -> Dict[str, object]:
    """The :class:`DyTViT` arguments of timm's ViT ``name``.

    Args:
        name (str): A timm ``VisionTransformer`` model name, e.g.
            ``'vit_base_patch16_224'``, ``'vit_large_patch16_224'``,
            ``'vit_base_patch14_dinov2'``, ``'vit_base_patch14_reg4_dinov2'``.

    Returns:
        dict: ``arch`` (a dict), ``patch_size``, ``with_cls_token``,
        ``num_reg_tokens``, ``no_embed_class``, ``layer_scale_init_value``
        and ``qkv_bias``.

    Raises:
        ValueError: If timm does not know ``name``, or its model is not a
            plain pre-norm ViT that :class:`DyTViT` reproduces (e.g. SwiGLU
            MLPs, a pre-norm before the blocks, non-square patches).
    """
    import timm
    from timm.layers import Mlp
    from timm.models.vision_transformer import VisionTransformer
    if name not in timm.list_models():
        close = timm.list_models(f'*{name.split("_")[1]}*') \
            if '_' in name else []
        raise ValueError(f'timm has no model {name!r}' +
                         (f'; similar: {close[:8]}' if close else ''))
    model = _layout_model(name)
    if not isinstance(model, VisionTransformer):
        raise ValueError(f'timm_arch={name!r} is a {type(model).__name__}, '
                         'not a timm VisionTransformer')
    block = model.blocks[0]
    problems = []
    if not isinstance(block.mlp, Mlp) or not isinstance(block.mlp.act,
                                                        nn.GELU):
        problems.append(f'its MLP is {type(block.mlp).__name__} (DyTViT '
                        'has a GELU Mlp)')
    if not isinstance(model.norm_pre, nn.Identity):
        problems.append('it has a norm before the blocks')
    patch = model.patch_embed.patch_size
    if patch[0] != patch[1]:
        problems.append(f'its patches are {patch}')
    if getattr(block.norm1, 'eps', 1e-6) != 1e-6:
        problems.append(f'its LayerNorm eps is {block.norm1.eps}')
    if problems:
        raise ValueError(f'timm_arch={name!r} cannot be a DyTViT: ' +
                         '; '.join(problems))
    layer_scale = None
    if not isinstance(block.ls1, nn.Identity):  # timm's LayerScale (of
        # timm.layers, or of vision_transformer.py up to timm 1.0.20)
        layer_scale = 1e-5  # any value: the checkpoint sets the gammas
    return dict(
        arch=dict(embed_dims=model.embed_dim, num_layers=len(model.blocks),
                  num_heads=block.attn.num_heads,
                  feedforward_channels=block.mlp.fc1.out_features),
        patch_size=patch[0],
        with_cls_token=model.cls_token is not None,
        num_reg_tokens=int(getattr(model, 'num_reg_tokens', 0)),
        no_embed_class=bool(model.no_embed_class),
        layer_scale_init_value=layer_scale,
        qkv_bias=block.attn.qkv.bias is not None)


def _layout_model(name: str) -> nn.Module:
    """timm's model ``name``, for its layout only: on the meta device (no
    memory, no initialisation), or, where this timm cannot build on it (up to
    timm 1.0.20 the ViT reads its drop-path rates with ``.item()`` while
    building, which a meta tensor cannot give on torch 2.1), on the CPU
    without timm's weight initialisation."""
    import timm
    try:
        with torch.device('meta'):
            return timm.create_model(name, pretrained=False)
    except NotImplementedError:
        return timm.create_model(name, pretrained=False, weight_init='skip')
