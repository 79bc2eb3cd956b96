"""DispatchStatsHook: the evaluation's activation rate and backbone FLOPs,
and a warning when the rate is far from the training target."""
from types import SimpleNamespace
from unittest import mock

import pytest
import torch

from mmdyt.engine import DispatchStatsHook
from mmdyt.models import DyTLoss, DyTViT
from mmdyt.models.flops import dyt_vit_flops

SMALL = dict(
    arch=dict(
        embed_dims=32, num_layers=4, num_heads=2, feedforward_channels=64),
    img_size=32,
    patch_size=8)


def evaluate(target_rate, batches):
    """Run the hook's test-epoch callbacks around eval forwards."""
    backbone = DyTViT(**SMALL).eval()
    runner = SimpleNamespace(model=SimpleNamespace(
        backbone=backbone, dyt_loss=DyTLoss(target_rate=target_rate)))
    hook = DispatchStatsHook()
    metrics, rates = {}, []
    with mock.patch('mmdyt.engine.hooks.dispatch_stats_hook.print_log') as log:
        hook.before_test_epoch(runner)
        with torch.no_grad():
            for i, batch in enumerate(batches):
                backbone(batch)
                rates.append((backbone.activation_rate(), batch.shape[0]))
                hook.after_test_iter(runner, i, outputs=[None] * len(batch))
        hook.after_test_epoch(runner, metrics)
    return backbone, metrics, rates, log


def test_rate_and_flops_over_an_epoch():
    batches = [torch.randn(3, 3, 32, 32), torch.randn(1, 3, 32, 32)]
    backbone, metrics, rates, _ = evaluate(0.5, batches)
    expected = sum(r * n for r, n in rates) / 4  # image-weighted
    assert metrics['act_rate'] == pytest.approx(expected, abs=1e-4)
    complete = dyt_vit_flops(backbone, (32, 32)).total / 1e9
    assert metrics['backbone_gflops_complete'] == pytest.approx(
        complete, abs=1e-4)
    assert metrics['backbone_gflops'] < metrics['backbone_gflops_complete']
    # the mask hook is removed after the epoch: later forwards not counted
    assert not backbone._mask_hooks


@pytest.mark.parametrize('target, warns', [(0.5, False), (0.95, True)])
def test_warns_when_the_rate_is_far_from_the_target(target, warns):
    _, metrics, _, log = evaluate(target, [torch.randn(4, 3, 32, 32)])
    # an untrained dispatcher (zero bias, small weights) runs about half
    assert abs(metrics['act_rate'] - 0.5) < 0.1
    assert log.called == warns
    if warns:
        assert 'far from the training target 0.95' in log.call_args[0][0]
