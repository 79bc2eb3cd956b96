"""Shared fixtures; the helpers themselves are in ``helpers.py``.

Importing mmdyt first applies its compat fixes. The tool folders go on
``sys.path`` (``helpers.TOOL_DIRS``) so that the tests import the tools'
scripts, and ``mmdyt_tools`` from ``tools/`` even where the environment was
installed before that package existed.
"""
import sys

import pytest
import torch

from helpers import TOOL_DIRS, save_timm_vit

for _path in TOOL_DIRS:
    if _path not in sys.path:
        sys.path.insert(0, _path)

import mmdyt  # noqa: E402,F401


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope='session')
def timm_vit_b(tmp_path_factory):
    """A random timm ViT-B/16 (with a 10-class head) and its checkpoint."""
    path = str(tmp_path_factory.mktemp('ckpt') / 'vit_b16.pth')
    torch.manual_seed(0)
    model = save_timm_vit(path, num_classes=10)
    return model, path
