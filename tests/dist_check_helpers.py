"""Test-only helpers imported by the distributed test's config
(``custom_imports``), in every process of a run."""
import os.path as osp

import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmdyt.models.layers.dispatcher import TokenDispatcher
from mmdyt.registry import register


def _noise_free_forward(self, x):
    """TokenDispatcher.forward without the Gumbel noise.

    The decision is ``1[score > 0]`` with the straight-through gradient of
    ``sigmoid(score / tau)``: the same function of each sample whatever the
    batch it is in and the process it runs in, so that a 2-process run and a
    1-process run can be compared exactly.
    """
    logits = self.score(x)
    if not self.training:
        return (logits > self._logit_threshold).to(x.dtype)
    soft = torch.sigmoid(logits / self.tau)
    hard = (soft > 0.5).to(soft.dtype)
    return hard - soft.detach() + soft


@register('HOOKS')
class SaveRankStateHook(Hook):
    """Saves every process's trainable parameters before and after training
    to ``<work_dir>/rank<r>.pth``.

    Args:
        noise_free (bool): Replace the dispatchers' Gumbel noise by
            :func:`_noise_free_forward` during the run (restored after it:
            runs in the tests' own process leave no trace). Defaults to
            False.
    """

    priority = 'LOWEST'

    def __init__(self, noise_free: bool = False):
        self.noise_free = noise_free
        self.initial = {}
        self._forward = None

    def before_run(self, runner) -> None:
        if self.noise_free:
            self._forward = TokenDispatcher.forward
            TokenDispatcher.forward = _noise_free_forward

    def after_run(self, runner) -> None:
        if self._forward is not None:
            TokenDispatcher.forward, self._forward = self._forward, None

    @staticmethod
    def _trainable(runner):
        model = runner.model
        if is_model_wrapper(model):
            model = model.module
        return {
            name: param.detach().clone()
            for name, param in model.named_parameters() if param.requires_grad
        }

    def before_train(self, runner) -> None:
        self.initial = self._trainable(runner)

    def after_train(self, runner) -> None:
        torch.save(
            dict(initial=self.initial, final=self._trainable(runner)),
            osp.join(runner.work_dir, f'rank{get_rank()}.pth'))
