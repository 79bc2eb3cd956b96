"""The layers DyT builds its backbones from (timm's ``layers`` package):
adapters, token dispatchers, the DyT ViT block, sparse (gathered) kernels,
pre-packed linears, windowed attention, relative position biases and
position-embedding resampling."""
from .adapters import Adapter, MoEAdapter
from .dispatcher import TokenDispatcher
from .dyt_block import DISPATCH_MODES, DyTBlock
from .pos_embed import resample_pos_embed
from .prepacked_linear import PrepackedLinear
from .rel_pos_bias import RelativePositionBias
from .window_attention import WindowAttention

__all__ = [
    'Adapter', 'MoEAdapter', 'TokenDispatcher', 'DyTBlock', 'DISPATCH_MODES',
    'PrepackedLinear', 'RelativePositionBias', 'WindowAttention',
    'resample_pos_embed'
]
