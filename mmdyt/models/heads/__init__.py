from .attentive_pool_head import AttentivePoolHead

__all__ = ['AttentivePoolHead']
