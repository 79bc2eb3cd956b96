from .adapters import Adapter, MoEAdapter
from .backbones import DyTViT
from .dispatcher import TokenDispatcher
from .dyt_block import DISPATCH_MODES, DyTBlock

__all__ = [
    'Adapter', 'MoEAdapter', 'TokenDispatcher', 'DyTBlock', 'DyTViT',
    'DISPATCH_MODES'
]
