"""Pre-train the Swin demo's small Swin Transformer.

The Swin twin of the segmentation demo (``configs/demo/seg_demo_swin.py``)
adapts a small mmseg ``SwinTransformer`` with ``DyTSwinTransformer``. Like
the demo ViT (demo_vit.py) it is pre-trained here on generated images, by
patch classification at the stride of each of its four stages, and saved in
mmseg's format, which ``init_cfg=dict(type='Pretrained', checkpoint=...)``
loads exactly as it loads a converted Swin-B.
"""
from typing import Dict, List

import torch
from demo_vit import DEMO_IMG_SIZE, pretrain_patch_classifier
from mmseg.models.backbones import SwinTransformer

#: The demo Swin, as ``DyTSwinTransformer(**DEMO_SWIN_ARCH)``: four stages
#: at strides 4, 8, 16 and 32 (24², 12², 6² and 3² tokens at 96²).
DEMO_SWIN_ARCH = dict(
    pretrain_img_size=DEMO_IMG_SIZE,
    embed_dims=32,
    depths=(2, 2, 2, 2),
    num_heads=(1, 2, 4, 8),
    window_size=6,
    drop_path_rate=0.1,
    out_indices=(0, 1, 2, 3))
DEMO_SWIN_CHANNELS = [32, 64, 128, 256]
DEMO_SWIN_STRIDES = [4, 8, 16, 32]


def build_demo_swin() -> SwinTransformer:
    """The small mmseg Swin Transformer the Swin demo pre-trains and
    adapts (randomly initialised as mmseg does it)."""
    model = SwinTransformer(**DEMO_SWIN_ARCH)
    model.init_weights()
    return model


def pretrain_demo_swin(out: str, seed: int = 12345, **kwargs
                       ) -> Dict[str, float]:
    """Pre-train the demo Swin and save its mmseg state dict to ``out``.

    Args:
        out (str): Checkpoint path to write.
        seed (int): Seed of the weights and of the generated images.
            Defaults to 12345.
        **kwargs: ``steps``, ``batch_size``, ``lr``, ``log`` of
            :func:`demo_vit.pretrain_patch_classifier`.

    Returns:
        dict: The final training loss and patch accuracy (stride 4).
    """
    torch.manual_seed(seed)
    model = build_demo_swin()

    def features(images: torch.Tensor) -> List[torch.Tensor]:
        return [out.flatten(2).transpose(1, 2) for out in model(images)]

    return pretrain_patch_classifier(
        model, features, DEMO_SWIN_CHANNELS, DEMO_SWIN_STRIDES,
        'Swin (mmseg format)', out, seed=seed, **kwargs)
