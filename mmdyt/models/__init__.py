from .backbones import DyTSwinTransformer, DyTViT
from .detectors import DyTTwoStageDetector
from .heads import AttentivePoolHead
from .layers import (DISPATCH_MODES, Adapter, DyTBlock, MoEAdapter,
                     RelativePositionBias, TokenDispatcher, WindowAttention)
from .losses import DyTLoss, distill_loss, rate_loss
from .necks import LN2d, IdentityNorm, SimpleFPN
from .recognizers import DyTRecognizer3D
from .segmentors import DyTEncoderDecoder

__all__ = [
    'Adapter', 'MoEAdapter', 'TokenDispatcher', 'DyTBlock', 'DyTViT',
    'DyTSwinTransformer',
    'DISPATCH_MODES', 'DyTLoss', 'rate_loss', 'distill_loss',
    'DyTEncoderDecoder', 'DyTRecognizer3D', 'DyTTwoStageDetector',
    'AttentivePoolHead',
    'IdentityNorm', 'LN2d', 'SimpleFPN', 'RelativePositionBias',
    'WindowAttention'
]
