from .dispatch_api import DispatchAPIMixin
from .dyt_swin import DyTSwinBlock, DyTSwinTransformer
from .dyt_vit import DyTViT
from .frozen_backbone import FrozenBackboneMixin

__all__ = [
    'DyTViT', 'DyTSwinTransformer', 'DyTSwinBlock', 'DispatchAPIMixin',
    'FrozenBackboneMixin'
]
