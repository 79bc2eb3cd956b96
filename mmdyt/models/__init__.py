from .adapters import Adapter, MoEAdapter
from .backbones import DyTSwinTransformer, DyTViT
from .dispatcher import TokenDispatcher
from .detectors import DyTTwoStageDetector
from .dyt_block import DISPATCH_MODES, DyTBlock
from .heads import AttentivePoolHead
from .losses import DyTLoss, distill_loss, rate_loss
from .necks import LN2d, IdentityNorm, SimpleFPN
from .rel_pos_bias import RelativePositionBias
from .window_attention import WindowAttention
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
