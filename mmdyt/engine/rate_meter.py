"""RateMeter: the one accumulator of a DyTViT's dispatch masks.

:class:`~mmdyt.engine.DispatchStatsHook` (rates and GFLOPs in the
evaluation metrics) and ``tools/analysis_tools/get_flops.py`` (FLOPs at the
rates measured over a dataset) both count with it.
"""
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.model import is_model_wrapper
from torch import Tensor

from mmdyt.models.flops import backbone_flops


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside a model wrapper (DDP, ...), else ``model``."""
    return model.module if is_model_wrapper(model) else model


def find_dyt_backbone(model: nn.Module) -> Optional[nn.Module]:
    """The DyTViT of a task model (unwrapping DDP), or ``model`` itself if it
    is one; None otherwise."""
    model = unwrap_model(model)
    backbone = getattr(model, 'backbone', model)
    return backbone if hasattr(backbone, 'register_mask_hook') else None


class _SizeStats:
    """Masks summed over the forwards of one input size."""

    def __init__(self, num_sites: int):
        self.active: Optional[Tensor] = None  # per site, on the device
        self.total = [0] * num_sites  # per site: dispatched tokens
        self.images = 0


class RateMeter:
    """Measures the activation rate of each dispatcher of a DyTViT, and the
    backbone FLOPs at those rates.

    A context manager: while open, it receives the masks of every dynamic
    forward of ``backbone`` (:meth:`DyTViT.register_mask_hook`; complete
    forwards are not counted) and sums, per dispatcher site and input size,
    the computed and the dispatched tokens (or samples, for ``'layer'``
    dispatch). Every forward counts, e.g. every crop of a sliding-window
    test and every view of a multi-view test. The sums stay on the masks'
    device: no value is read back until a result is asked for.

    Args:
        backbone (DyTViT): The backbone to watch.

    Examples:
        >>> import torch
        >>> from mmdyt.models import DyTViT
        >>> vit = DyTViT(arch='tiny', img_size=32).eval()
        >>> with RateMeter(vit) as meter, torch.no_grad():
        ...     _ = vit(torch.randn(2, 3, 32, 32))
        >>> len(meter.rates), meter.num_images
        (12, 2)
    """

    def __init__(self, backbone: nn.Module):
        self.backbone = backbone
        self.num_sites = len(backbone.dispatch_sites)
        self._sizes: Dict[Tuple[int, int], _SizeStats] = defaultdict(
            lambda: _SizeStats(self.num_sites))
        self.num_forwards = 0
        self._handle = None

    def update(self, masks: Sequence[Tensor], inputs: Tensor) -> None:
        """Add the masks of one forward of ``inputs`` (N, C, H, W) or
        (N, C, T, H, W)."""
        if not masks:
            return
        stats = self._sizes[tuple(inputs.shape[-2:])]
        active = torch.stack(
            [m.detach().sum(dtype=torch.float64) for m in masks])
        stats.active = active if stats.active is None else \
            stats.active + active
        for i, mask in enumerate(masks):
            stats.total[i] += mask.numel()
        stats.images += masks[0].shape[0]
        self.num_forwards += 1

    def __enter__(self) -> 'RateMeter':
        self._handle = self.backbone.register_mask_hook(self.update)
        return self

    def __exit__(self, *exc_info) -> None:
        self._handle.remove()
        self._handle = None

    @property
    def num_images(self) -> int:
        """Images (video frames) counted."""
        return sum(s.images for s in self._sizes.values())

    def site_sums(self) -> Tuple[List[float], List[float]]:
        """Computed and dispatched tokens per site, summed over all forwards
        (one read-back)."""
        active = [0.] * self.num_sites
        total = [0.] * self.num_sites
        for stats in self._sizes.values():
            for i, value in enumerate(stats.active.cpu().tolist()):
                active[i] += value
                total[i] += stats.total[i]
        return active, total

    @property
    def rates(self) -> Optional[List[float]]:
        """Measured rate per site (``dispatch_sites`` order); None before any
        forward or without dispatchers."""
        if not self.num_forwards:
            return None
        active, total = self.site_sums()
        return [a / t for a, t in zip(active, total)]

    def flops(self, complete: bool = False) -> float:
        """Backbone FLOPs summed over every counted image (frame), at the
        rates measured for its input size; ``complete`` counts the same
        images with every token computed.

        The FLOPs model is linear in the rates, so this equals the sum of the
        per-forward FLOPs.
        """
        total = 0.
        for size, stats in self._sizes.items():
            rates = None if complete else [
                a / t for a, t in zip(stats.active.cpu().tolist(), stats.total)
            ]
            total += backbone_flops(self.backbone, size,
                                    rates).total * stats.images
        return total
