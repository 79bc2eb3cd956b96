"""IdentityNorm: "no normalisation" where a config asks for a norm layer."""
import torch.nn as nn

from mmdyt.registry import register


@register('MODELS')
class IdentityNorm(nn.Identity):
    """A norm layer that does nothing, for ``norm_cfg=dict(type=
    'IdentityNorm')`` in modules that always build one.

    mmseg's ``Feature2Pyramid`` puts a norm layer between the two
    deconvolutions of its 4x branch; the authors' segmentation model has
    none there (ConvTranspose -> GELU -> ConvTranspose). ``IdentityNorm``
    gives that model with mmseg's own neck.

    Args:
        num_features (int): Ignored (the interface of norm layers).
        **kwargs: Ignored (e.g. ``eps``, ``momentum``).

    Examples:
        >>> from mmcv.cnn import build_norm_layer
        >>> name, layer = build_norm_layer(dict(type='IdentityNorm'), 8)
        >>> name, type(layer).__name__
        ('norm', 'IdentityNorm')
    """

    _abbr_ = 'norm'

    def __init__(self, num_features: int, **kwargs):
        super().__init__()
