from .dyt_recognizer3d import DyTRecognizer3D

__all__ = ['DyTRecognizer3D']
