"""DispatchStatsHook: activation rate and FLOPs measured during evaluation."""
from typing import Dict, Optional

import torch
from mmengine.dist import all_reduce
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmdyt.registry import register_hook
from mmdyt.utils.flops import dyt_vit_flops


def find_dyt_backbone(model: torch.nn.Module) -> Optional[torch.nn.Module]:
    """The DyTViT of a segmentor or recognizer (unwrapping DDP), if any."""
    if is_model_wrapper(model):
        model = model.module
    backbone = getattr(model, 'backbone', model)
    return backbone if hasattr(backbone, 'dispatch_sites') else None


@register_hook()
class DispatchStatsHook(Hook):
    """Adds DyT's measured cost to the validation and test metrics.

    Every backbone forward of an evaluation epoch is counted (all crops of a
    sliding-window inference, all views of a multi-view test), and the epoch's
    metrics get:

    - ``act_rate``: the mean activation rate of the dispatchers;
    - ``backbone_gflops``: backbone GFLOPs per sample at the measured rates;
    - ``backbone_gflops_complete``: the same model computing every token.

    Args:
        priority (str): Runs before mmengine's RuntimeInfoHook so that the
            logger and ``runner.test()``'s result include the metrics.
            Defaults to ``'HIGHEST'``.
    """

    def __init__(self, priority: str = 'HIGHEST'):
        self.priority = priority
        self._handle = None
        self._stats: Dict[str, torch.Tensor] = {}

    def _on_forward(self, backbone, args, outputs) -> None:
        if not backbone.dispatch_masks:
            return
        inputs = args[0]
        images = inputs.shape[0] * (inputs.shape[2]
                                    if inputs.dim() == 5 else 1)
        rates = [float(m.float().mean()) for m in backbone.dispatch_masks]
        size = tuple(inputs.shape[-2:])
        stats = torch.tensor([
            *(r * images for r in rates), images,
            dyt_vit_flops(backbone, size, rates).total * images,
            dyt_vit_flops(backbone, size).total * images
        ], dtype=torch.float64)
        self._stats['forward'] += stats

    def _start(self, runner) -> None:
        backbone = find_dyt_backbone(runner.model)
        if backbone is None or not backbone.dispatch_sites:
            return
        # per site: rate x images; images, FLOPs, complete FLOPs; samples
        self._stats = dict(
            forward=torch.zeros(
                len(backbone.dispatch_sites) + 3, dtype=torch.float64),
            samples=torch.zeros(1, dtype=torch.float64))
        self._handle = backbone.register_forward_hook(self._on_forward)

    def _count(self, runner, outputs) -> None:
        if self._handle is not None and outputs is not None:
            self._stats['samples'] += len(outputs)

    def _finish(self, runner, metrics: Optional[dict]) -> None:
        if self._handle is None:
            return
        self._handle.remove()
        self._handle = None
        stats = torch.cat([self._stats['forward'], self._stats['samples']])
        all_reduce(stats)  # sums over ranks; a no-op without distribution
        *site_sums, images, flops, complete_flops, samples = stats.tolist()
        if metrics is None or not images:
            return
        metrics['act_rate'] = round(sum(site_sums) / len(site_sums) / images,
                                    4)
        metrics['backbone_gflops'] = round(flops / samples / 1e9, 4)
        metrics['backbone_gflops_complete'] = round(
            complete_flops / samples / 1e9, 4)

    def before_val_epoch(self, runner) -> None:
        self._start(runner)

    def before_test_epoch(self, runner) -> None:
        self._start(runner)

    def after_val_iter(self, runner, batch_idx, data_batch=None,
                       outputs=None) -> None:
        self._count(runner, outputs)

    def after_test_iter(self, runner, batch_idx, data_batch=None,
                        outputs=None) -> None:
        self._count(runner, outputs)

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._finish(runner, metrics)

    def after_test_epoch(self, runner, metrics=None) -> None:
        self._finish(runner, metrics)
