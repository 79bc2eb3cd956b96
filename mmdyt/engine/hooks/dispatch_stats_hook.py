"""DispatchStatsHook: activation rate and FLOPs measured during evaluation."""
import logging
from typing import Optional

import torch
from mmengine.dist import all_reduce
from mmengine.hooks import Hook
from mmengine.logging import print_log

from mmdyt.registry import register
from ..rate_meter import RateMeter, find_dyt_backbone, unwrap_model


@register('HOOKS')
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
        self._meter: Optional[RateMeter] = None
        self._samples = 0

    def _start(self, runner) -> None:
        backbone = find_dyt_backbone(runner.model)
        if backbone is None or not backbone.dispatch_sites:
            return
        self._meter = RateMeter(backbone).__enter__()
        self._samples = 0

    def _count(self, runner, outputs) -> None:
        if self._meter is not None and outputs is not None:
            self._samples += len(outputs)

    def _finish(self, runner, metrics: Optional[dict]) -> None:
        meter, self._meter = self._meter, None
        if meter is None:
            return
        meter.__exit__()
        num_sites = meter.num_sites
        if meter.num_forwards:
            active, total = meter.site_sums()
            sums = [
                *active, *total, meter.num_images,
                meter.flops(), meter.flops(complete=True), self._samples
            ]
        else:
            sums = [0.] * (2 * num_sites + 4)
        stats = torch.tensor(sums, dtype=torch.float64)
        all_reduce(stats)  # sums over ranks; a no-op without distribution
        stats = stats.tolist()
        active, total = stats[:num_sites], stats[num_sites:2 * num_sites]
        images, flops, complete_flops, samples = stats[2 * num_sites:]
        if metrics is None or not images:
            return
        metrics['act_rate'] = round(
            sum(a / t for a, t in zip(active, total)) / num_sites, 4)
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
