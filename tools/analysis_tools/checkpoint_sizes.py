"""Checkpoint sizes of a config's model: full vs adapter-only.

Builds the model (random weights; nothing is loaded), gives every trainable
parameter AdamW moments as after one iteration, and saves the checkpoint
with and without ``save_trainable_only``: the weights alone and with the
optimizer state that mmengine's CheckpointHook also saves. Example::

    python tools/analysis_tools/checkpoint_sizes.py configs/ade20k/dyt_vitb.py
"""
import argparse
import os
import os.path as osp
import tempfile

import torch
from mmengine.registry import init_default_scope

import mmdyt  # noqa: F401  (compat fixes, registration)
from mmdyt.registry import library_registry
from mmdyt_tools.inputs import load_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='config whose model to measure')
    args = parser.parse_args()
    cfg = load_config(args.config)
    init_default_scope(cfg.default_scope)
    cfg.model.backbone.init_cfg = None
    model = library_registry(cfg.default_scope, 'MODELS').build(cfg.model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable)
    for param in trainable:
        param.grad = torch.zeros_like(param)
    optimizer.step()  # the moments exist from the first iteration on
    backbone = [p for p in model.backbone.parameters() if p.requires_grad]
    millions = [
        sum(p.numel() for p in params) / 1e6
        for params in (list(model.parameters()), trainable, backbone)
    ]
    print('parameters: {:.2f}M, trainable {:.2f}M (backbone {:.2f}M)'.format(
        *millions))
    with tempfile.TemporaryDirectory() as tmp:
        for trainable_only in (False, True):
            model.backbone.save_trainable_only = trainable_only
            state_dict = model.state_dict()
            sizes = []
            for extra in ({}, {'optimizer': optimizer.state_dict()}):
                path = osp.join(tmp, 'ckpt.pth')
                torch.save(dict(state_dict=state_dict, **extra), path)
                sizes.append(os.path.getsize(path) / 2**20)
            name = 'adapter-only' if trainable_only else 'full'
            print(f'{name:>12}: {sizes[0]:7.1f} MiB weights, {sizes[1]:7.1f} '
                  'MiB with the AdamW state')


if __name__ == '__main__':
    main()
