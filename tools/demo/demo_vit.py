"""Pre-train the demos' small ViT, standing in for a downloaded checkpoint.

The demos cannot download ImageNet weights, so they pre-train a small timm
ViT on generated images (patch classification: which shape, if any, covers
each patch; a separate stream of images from the demo's training set) and
save it in timm's format. The demo then adapts it frozen with DyT, loading it
through ``init_cfg=dict(type='Pretrained', checkpoint=...)`` exactly as a
user loads a timm ViT-B.
"""
import os
import os.path as osp
import time
from typing import Callable, Dict

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import print_log
from timm.models.vision_transformer import VisionTransformer

import seg_demo_data as seg_data

#: The demo ViT, as ``DyTViT(arch=DEMO_ARCH, img_size=96, patch_size=8)``.
DEMO_ARCH = dict(
    embed_dims=128, num_layers=6, num_heads=4, feedforward_channels=512)
DEMO_IMG_SIZE = 96
DEMO_PATCH_SIZE = 8
#: Normalisation of the demo configs' data preprocessor (RGB).
MEAN = STD = 127.5


def build_demo_vit() -> VisionTransformer:
    """The small timm ViT the demos pre-train and adapt."""
    return VisionTransformer(
        img_size=DEMO_IMG_SIZE,
        patch_size=DEMO_PATCH_SIZE,
        embed_dim=DEMO_ARCH['embed_dims'],
        depth=DEMO_ARCH['num_layers'],
        num_heads=DEMO_ARCH['num_heads'],
        mlp_ratio=DEMO_ARCH['feedforward_channels'] / DEMO_ARCH['embed_dims'],
        num_classes=0)


def _batch(rng: np.random.RandomState,
           size: int) -> Dict[str, torch.Tensor]:
    images, labels = zip(*(seg_data.make_sample(rng, DEMO_IMG_SIZE)
                           for _ in range(size)))
    rgb = np.stack(images)[..., ::-1].astype(np.float32)
    inputs = torch.from_numpy((rgb - MEAN) / STD).permute(0, 3, 1, 2)
    # the class covering most of each patch (annotation 1.. -> class 0..)
    one_hot = F.one_hot(torch.from_numpy(np.stack(labels)).long() - 1,
                        len(seg_data.CLASSES)).permute(0, 3, 1, 2).float()
    targets = F.avg_pool2d(one_hot, DEMO_PATCH_SIZE).argmax(1).flatten(1)
    return dict(inputs=inputs.contiguous(), targets=targets)


def pretrain_demo_vit(out: str,
                      steps: int = 200,
                      batch_size: int = 32,
                      lr: float = 1e-3,
                      seed: int = 12345,
                      log: Callable[[str], None] = lambda msg: print_log(
                          msg, logger='current')) -> Dict[str, float]:
    """Pre-train the demo ViT and save its timm state dict to ``out``.

    Args:
        out (str): Checkpoint path to write.
        steps (int): Optimisation steps. Defaults to 200.
        batch_size (int): Images per step. Defaults to 32.
        lr (float): Peak AdamW learning rate (cosine decay). Defaults to 1e-3.
        seed (int): Seed of the weights and of the generated images (not the
            demo dataset's seeds). Defaults to 12345.
        log (Callable): Progress printer.

    Returns:
        dict: The final training loss and patch accuracy.
    """
    torch.manual_seed(seed)
    rng = np.random.RandomState(seed)
    model = build_demo_vit()
    head = nn.Linear(DEMO_ARCH['embed_dims'], len(seg_data.CLASSES))
    params = [*model.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    start = time.time()
    stats = {}
    for step in range(1, steps + 1):
        batch = _batch(rng, batch_size)
        tokens = model.forward_features(batch['inputs'])
        logits = head(tokens[:, model.num_prefix_tokens:])
        loss = F.cross_entropy(logits.flatten(0, 1),
                               batch['targets'].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        if step % 25 == 0 or step == steps:
            accuracy = (logits.argmax(-1) == batch['targets']).float().mean()
            stats = dict(loss=loss.item(), patch_acc=accuracy.item())
            log(f'pretrain demo ViT [{step}/{steps}] loss {stats["loss"]:.3f}'
                f' patch acc {stats["patch_acc"]:.3f} '
                f'({time.time() - start:.0f}s)')
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    torch.save(model.state_dict(), out)
    log(f'saved the pre-trained demo ViT (timm format) to {out}')
    return stats
