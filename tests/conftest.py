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


def seg_demo_env(root, training: int = 4, validation: int = 2) -> dict:
    """Generate a small demo segmentation dataset and a random demo ViT
    checkpoint under ``root``; return the ``--cfg-options`` that point
    ``configs/demo/seg_demo.py`` at them, with in-process data loading."""
    from mmdyt.demo.pretrain import build_demo_vit
    from mmdyt.demo.seg_data import make_seg_demo
    data = str(root / 'seg')
    make_seg_demo(data, splits=dict(training=training, validation=validation))
    torch.manual_seed(0)
    torch.save(build_demo_vit().state_dict(), root / 'vit.pth')
    options = {'model.backbone.init_cfg.checkpoint': str(root / 'vit.pth')}
    for split in ('train', 'val', 'test'):
        options.update({
            f'{split}_dataloader.dataset.data_root': data,
            f'{split}_dataloader.num_workers': 0,
            f'{split}_dataloader.persistent_workers': False,
        })
    return options
