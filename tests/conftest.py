"""Shared fixtures. Importing mmdyt first applies its compat fixes."""
import os

import pytest
import torch

import mmdyt  # noqa: F401

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def save_timm_vit(path: str, model_name: str = 'vit_base_patch16_224',
                  **kwargs) -> torch.nn.Module:
    """Save a randomly initialised timm ViT's state dict to ``path``."""
    import timm
    model = timm.create_model(model_name, pretrained=False, **kwargs).eval()
    torch.save(model.state_dict(), path)
    return model


@pytest.fixture(scope='session')
def timm_vit_b(tmp_path_factory):
    """A random timm ViT-B/16 (with a 10-class head) and its checkpoint."""
    path = str(tmp_path_factory.mktemp('ckpt') / 'vit_b16.pth')
    torch.manual_seed(0)
    model = save_timm_vit(path, num_classes=10)
    return model, path
