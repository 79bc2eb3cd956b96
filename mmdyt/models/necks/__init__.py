from .identity_norm import IdentityNorm
from .layer_norm_2d import LN2d
from .simple_fpn import SimpleFPN

__all__ = ['IdentityNorm', 'LN2d', 'SimpleFPN']
