"""mmdyt: Dynamic Tuning (DyT, NeurIPS 2024) for OpenMMLab semantic
segmentation (mmseg), object detection (mmdet) and video recognition
(mmaction2).

Importing the package fixes known upstream breakages (:mod:`mmdyt.compat`)
and registers mmdyt's modules in mmseg's, mmdet's and mmaction2's
registries.
"""
from . import compat

compat.apply_all()

from .version import __version__  # noqa: E402
from . import datasets, engine, models  # noqa: E402,F401

__all__ = ['__version__', 'compat', 'datasets', 'engine', 'models']
