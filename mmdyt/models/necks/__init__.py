from .identity_norm import IdentityNorm

__all__ = ['IdentityNorm']
