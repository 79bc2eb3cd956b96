"""SimpleFPN: ViTDet's simple feature pyramid from one 1/16 map."""
from typing import List, Optional, Sequence, Tuple

import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule, build_norm_layer
from mmengine.model import BaseModule
from torch import Tensor

from mmdyt.registry import current_scope, library_registry, register
from mmdyt.utils.args import suggest_unknown_arguments

#: The scale factors SimpleFPN can build, with the channels of the map each
#: branch gives (as a fraction of the backbone's).
SCALES = {4.0: 4, 2.0: 2, 1.0: 1, 0.5: 1}


@register('MODELS', scopes=('mmdet', ))
@suggest_unknown_arguments
class SimpleFPN(BaseModule):
    """ViTDet's simple feature pyramid (Li et al., ECCV 2022, Fig. 2c).

    From the last map of a plain ViT (stride 16, ``backbone_channel``
    channels) one branch per scale factor:

    - 4: ConvTranspose(2, stride 2) to C/2, norm, GELU, ConvTranspose to C/4
      (stride 4);
    - 2: ConvTranspose to C/2 (stride 8);
    - 1: the map itself (stride 16);
    - 0.5: max-pool 2x2 (stride 32);

    each followed by a 1x1 conv and a 3x3 conv to ``out_channels``, each conv
    without bias and with a norm (LayerNorm over channels by default). With
    ``num_outs`` one more than the scales, a last level is max-pooled (kernel
    1, stride 2) from the coarsest, as mmdet's ``FPN`` and ViTDet's
    ``LastLevelMaxPool`` do (P6 for the RPN).

    Args:
        backbone_channel (int): Channels of the backbone map.
        out_channels (int): Channels of every output. Defaults to 256.
        scale_factors (Sequence[float]): Scales of the levels, finest first;
            each one of 4, 2, 1, 0.5. Defaults to (4.0, 2.0, 1.0, 0.5).
        num_outs (int): Outputs: ``len(scale_factors)`` or one more (the
            max-pooled level). Defaults to 5.
        norm_cfg (dict): Norm of the convolutions and of the 4x branch.
            Defaults to ``dict(type='LN2d', eps=1e-6)``.
        init_cfg (dict, optional): Initialisation config. Defaults to None.

    Examples:
        >>> import torch
        >>> neck = SimpleFPN(backbone_channel=32, out_channels=16)
        >>> [tuple(o.shape[1:]) for o in neck((torch.randn(1, 32, 8, 8), ))]
        [(16, 32, 32), (16, 16, 16), (16, 8, 8), (16, 4, 4), (16, 2, 2)]
    """

    def __init__(self,
                 backbone_channel: int,
                 out_channels: int = 256,
                 scale_factors: Sequence[float] = (4.0, 2.0, 1.0, 0.5),
                 num_outs: int = 5,
                 norm_cfg: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        bad = [s for s in scale_factors if float(s) not in SCALES]
        if bad or not scale_factors:
            raise ValueError(
                f'SimpleFPN scale_factors must be among {sorted(SCALES)}, '
                f'got {tuple(scale_factors)}')
        if num_outs not in (len(scale_factors), len(scale_factors) + 1):
            raise ValueError(
                f'num_outs must be {len(scale_factors)} (the scales) or '
                f'{len(scale_factors) + 1} (plus a max-pooled level), got '
                f'{num_outs}')
        self.scale_factors = tuple(float(s) for s in scale_factors)
        self.num_outs = num_outs
        norm_cfg = self._resolve_norm(norm_cfg or dict(type='LN2d',
                                                       eps=1e-6))
        dim = backbone_channel
        self.stages = nn.ModuleList()
        for scale in self.scale_factors:
            channels = dim // SCALES[scale]
            layers: List[nn.Module] = []
            if scale == 4.0:
                layers += [
                    nn.ConvTranspose2d(dim, dim // 2, 2, stride=2),
                    build_norm_layer(norm_cfg, dim // 2)[1],
                    nn.GELU(),
                    nn.ConvTranspose2d(dim // 2, dim // 4, 2, stride=2)
                ]
            elif scale == 2.0:
                layers.append(nn.ConvTranspose2d(dim, dim // 2, 2, stride=2))
            elif scale == 0.5:
                layers.append(nn.MaxPool2d(2, stride=2))
            layers += [
                ConvModule(channels, out_channels, 1, norm_cfg=norm_cfg,
                           act_cfg=None),
                ConvModule(out_channels, out_channels, 3, padding=1,
                           norm_cfg=norm_cfg, act_cfg=None)
            ]
            self.stages.append(nn.Sequential(*layers))

    @staticmethod
    def _resolve_norm(norm_cfg: dict) -> dict:
        """``norm_cfg`` with its ``type`` looked up in the current
        library's registry (so that ``'LN2d'`` works outside a Runner)."""
        norm_cfg = dict(norm_cfg)
        if isinstance(norm_cfg.get('type'), str):
            cls = library_registry(current_scope('mmdet'),
                                   'MODELS').get(norm_cfg['type'])
            if cls is None:
                raise KeyError(f"SimpleFPN's norm_cfg type "
                               f"{norm_cfg['type']!r} is not registered")
            norm_cfg['type'] = cls
        return norm_cfg

    def forward(self, inputs: Sequence[Tensor]) -> Tuple[Tensor, ...]:
        """Build the pyramid from the last backbone output.

        Args:
            inputs (Sequence[Tensor]): Backbone outputs; the last, (N, C,
                H, W) at stride 16, is used.

        Returns:
            tuple[Tensor]: ``num_outs`` maps, finest first.
        """
        x = inputs[-1]
        outs = [stage(x) for stage in self.stages]
        if self.num_outs > len(outs):
            outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        return tuple(outs)
