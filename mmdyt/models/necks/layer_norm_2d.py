"""LN2d: LayerNorm over the channels of (N, C, H, W) maps."""
from timm.layers import LayerNorm2d
from torch import Tensor

from mmdyt.registry import register


@register('MODELS')
class LN2d(LayerNorm2d):
    """timm's channels-first LayerNorm, registered as ``LN2d`` (the name
    mmdet's ViTDet project gives it) for ``norm_cfg=dict(type='LN2d')``.

    Each position's C channels are normalised, as ViTDet's simple feature
    pyramid and its LN heads do (mmcv's ``'LN'`` would normalise the last,
    spatial, axis of a map instead). The output is contiguous (N, C, H, W),
    as mmdet's ``LN2d`` gives it (timm's permutes leave it channels-last in
    memory, which mmcv's compiled ops misread).

    Args:
        num_channels (int): Channels C.
        eps (float): Added to the variance. Defaults to 1e-6 (ViTDet's).
        affine (bool): Learn a scale and a shift. Defaults to True.

    Examples:
        >>> import torch
        >>> norm = LN2d(4)
        >>> out = norm(torch.randn(2, 4, 3, 3) * 5 + 1)
        >>> bool(out.mean(1).abs().max() < 1e-5)
        True
    """

    _abbr_ = 'ln'

    def __init__(self, num_channels: int, eps: float = 1e-6,
                 affine: bool = True):
        super().__init__(num_channels, eps=eps, affine=affine)

    def forward(self, x: Tensor) -> Tensor:
        """Normalise the channels of ``x`` (N, C, H, W)."""
        return super().forward(x).contiguous()
