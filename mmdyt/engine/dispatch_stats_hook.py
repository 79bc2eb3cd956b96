"""DispatchStatsHook: activation rate and FLOPs measured during evaluation."""
import logging
from typing import Dict, Optional

import torch
from mmengine.dist import all_reduce
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from mmdyt.registry import register_hook
from mmdyt.utils.flops import dyt_vit_flops


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a model wrapper (DDP, ...), else ``model``."""
    return model.module if is_model_wrapper(model) else model


def find_dyt_backbone(model: torch.nn.Module) -> Optional[torch.nn.Module]:
    """The DyTViT of a segmentor or recognizer (unwrapping DDP), if any."""
    model = unwrap_model(model)
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

    When the measured rate is more than ``rate_tolerance`` away from the
    model's training target (``model.dyt_loss.target_rate``), it logs a
    warning: the evaluation thresholds ``sigmoid(score)`` at the dispatcher's
    ``threshold`` while training draws Gumbel noise, so the two rates agree
    only once training has polarised the scores.

    Args:
        priority (str): Runs before mmengine's RuntimeInfoHook so that the
            logger and ``runner.test()``'s result include the metrics.
            Defaults to ``'HIGHEST'``.
        rate_tolerance (float): Distance from the target rate above which a
            warning is logged. Defaults to 0.1.
    """

    def __init__(self, priority: str = 'HIGHEST', rate_tolerance: float = 0.1):
        self.priority = priority
        self.rate_tolerance = rate_tolerance
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
        self._check_rate(runner, metrics['act_rate'])
        metrics['backbone_gflops'] = round(flops / samples / 1e9, 4)
        metrics['backbone_gflops_complete'] = round(
            complete_flops / samples / 1e9, 4)

    def _check_rate(self, runner, rate: float) -> None:
        target = getattr(
            getattr(unwrap_model(runner.model), 'dyt_loss', None),
            'target_rate', None)
        if target is not None and abs(rate - target) > self.rate_tolerance:
            print_log(
                f'measured activation rate {rate:.3f} is far from the '
                f'training target {target}: evaluation thresholds the '
                'dispatcher scores without noise, which matches the '
                'training rate once the scores have polarised (train '
                'longer), or set the threshold (tools/test.py '
                '--dispatch-threshold)',
                logger='current',
                level=logging.WARNING)

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
