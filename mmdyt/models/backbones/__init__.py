from .dyt_vit import DyTViT

__all__ = ['DyTViT']
