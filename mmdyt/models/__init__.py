from .adapters import Adapter, MoEAdapter
from .backbones import DyTViT
from .dispatcher import TokenDispatcher
from .dyt_block import DISPATCH_MODES, DyTBlock
from .losses import DyTLoss, distill_loss, rate_loss
from .segmentors import DyTEncoderDecoder

__all__ = [
    'Adapter', 'MoEAdapter', 'TokenDispatcher', 'DyTBlock', 'DyTViT',
    'DISPATCH_MODES', 'DyTLoss', 'rate_loss', 'distill_loss',
    'DyTEncoderDecoder'
]
