from .dyt_swin import DyTSwinBlock, DyTSwinTransformer
from .dyt_vit import DyTViT

__all__ = ['DyTViT', 'DyTSwinTransformer', 'DyTSwinBlock']
