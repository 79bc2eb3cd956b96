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
from typing import Callable, Dict, List, Sequence

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


def _batch(rng: np.random.RandomState, size: int,
           strides: Sequence[int] = (DEMO_PATCH_SIZE, )
           ) -> Dict[str, torch.Tensor]:
    """Generated images and, per stride, the class covering most of each
    ``stride``-sized patch, flattened (N, H / stride * W / stride)."""
    images, labels = zip(*(seg_data.make_sample(rng, DEMO_IMG_SIZE)
                           for _ in range(size)))
    rgb = np.stack(images)[..., ::-1].astype(np.float32)
    inputs = torch.from_numpy((rgb - MEAN) / STD).permute(0, 3, 1, 2)
    # annotation 1.. -> class 0..
    one_hot = F.one_hot(torch.from_numpy(np.stack(labels)).long() - 1,
                        len(seg_data.CLASSES)).permute(0, 3, 1, 2).float()
    targets = [F.avg_pool2d(one_hot, stride).argmax(1).flatten(1)
               for stride in strides]
    return dict(inputs=inputs.contiguous(), targets=targets)


def _log_current(msg: str) -> None:
    print_log(msg, logger='current')


def pretrain_patch_classifier(
        model: nn.Module,
        features: Callable[[torch.Tensor], List[torch.Tensor]],
        channels: Sequence[int],
        strides: Sequence[int],
        name: str,
        out: str,
        steps: int = 200,
        batch_size: int = 32,
        lr: float = 1e-3,
        seed: int = 12345,
        log: Callable[[str], None] = _log_current) -> Dict[str, float]:
    """Pre-train a backbone on patch classification and save its weights.

    Every feature map of ``features(images)`` gets a linear head that
    predicts, for each of its tokens, the class covering most of the
    ``stride``-sized patch under it; the loss is the mean over the maps.

    Args:
        model (nn.Module): The backbone (built under ``seed``).
        features (Callable): Images -> token features, one (N, L_s, C_s)
            tensor per stride, row-major over the patch grid.
        channels (Sequence[int]): ``C_s`` of every feature.
        strides (Sequence[int]): The patch size of every feature.
        name (str): What the log calls the model.
        out (str): Checkpoint path to write (``model.state_dict()``).
        steps (int): Optimisation steps. Defaults to 200.
        batch_size (int): Images per step. Defaults to 32.
        lr (float): Peak AdamW learning rate (one-cycle). Defaults to 1e-3.
        seed (int): Seed of the heads and of the generated images (not the
            demo dataset's seeds). Defaults to 12345.
        log (Callable): Progress printer.

    Returns:
        dict: The final training loss and patch accuracy (of the finest
        feature).
    """
    rng = np.random.RandomState(seed)
    heads = nn.ModuleList(
        nn.Linear(c, len(seg_data.CLASSES)) for c in channels)
    params = [*model.parameters(), *heads.parameters()]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    start = time.time()
    stats = {}
    for step in range(1, steps + 1):
        batch = _batch(rng, batch_size, strides)
        logits = [head(tokens) for head, tokens in
                  zip(heads, features(batch['inputs']))]
        loss = sum(
            F.cross_entropy(logit.flatten(0, 1), target.flatten())
            for logit, target in zip(logits, batch['targets'])) / len(heads)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        if step % 25 == 0 or step == steps:
            accuracy = (logits[0].argmax(-1) == batch['targets'][0]).float()
            stats = dict(loss=loss.item(), patch_acc=accuracy.mean().item())
            log(f'pretrain demo {name} [{step}/{steps}] loss '
                f'{stats["loss"]:.3f} patch acc {stats["patch_acc"]:.3f} '
                f'({time.time() - start:.0f}s)')
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    torch.save(model.state_dict(), out)
    log(f'saved the pre-trained demo {name} to {out}')
    return stats


def pretrain_demo_vit(out: str, seed: int = 12345, **kwargs
                      ) -> Dict[str, float]:
    """Pre-train the demo ViT and save its timm state dict to ``out``.

    Args:
        out (str): Checkpoint path to write.
        seed (int): Seed of the weights and of the generated images.
            Defaults to 12345.
        **kwargs: ``steps``, ``batch_size``, ``lr``, ``log`` of
            :func:`pretrain_patch_classifier`.

    Returns:
        dict: The final training loss and patch accuracy.
    """
    torch.manual_seed(seed)
    model = build_demo_vit()

    def features(images: torch.Tensor) -> List[torch.Tensor]:
        return [model.forward_features(images)[:, model.num_prefix_tokens:]]

    return pretrain_patch_classifier(
        model, features, [DEMO_ARCH['embed_dims']], [DEMO_PATCH_SIZE],
        'ViT (timm format)', out, seed=seed, **kwargs)
