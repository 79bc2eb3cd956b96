"""The token dispatcher: decides which tokens a block computes."""
import math
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor

from mmdyt.utils.args import suggest_unknown_arguments
from mmdyt.utils.torch_compat import autocast_enabled


def mean_rate(masks: Sequence[Tensor]) -> Tensor:
    """The activation rate of a forward: the mean over its dispatchers of
    each mask's mean over the batch and the tokens.

    Every dispatcher weighs the same (with equal-sized masks this is the mean
    over all their entries: the paper's batch-level mean). This is the rate
    the rate loss pulls to its target and the rate mmdyt reports.

    Args:
        masks (Sequence[Tensor]): One mask per dispatcher.
    """
    return torch.stack([m.float().mean() for m in masks]).mean()


def check_open_unit(name: str, value: float) -> float:
    """Return ``value`` if it lies strictly between 0 and 1, else raise.

    Args:
        name (str): The argument's name, for the error message.
        value (float): The value to check.
    """
    if not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ValueError(f'{name} must be a number in the open interval '
                         f'(0, 1), got {value!r}')
    return float(value)


@suggest_unknown_arguments
class TokenDispatcher(BaseModule):
    """Scores tokens with a linear layer and decides which ones are active.

    Training samples a hard mask with the Gumbel-sigmoid and passes gradients
    straight through its soft relaxation (docs/en/advanced_guides/method.md)::

        s      = x W + b
        m_soft = sigmoid((s + g1 - g2) / tau),  g1, g2 ~ Gumbel(0, 1)
        M      = 1[m_soft > 0.5] - stopgrad(m_soft) + m_soft

    Evaluation is deterministic: ``M = 1[sigmoid(s) > threshold]``. The
    threshold is a cost/accuracy knob that can be changed on a trained model
    (:attr:`threshold`): a higher threshold activates fewer tokens.

    Prefix (cls) tokens are not scored here; the block keeps them active.

    Args:
        embed_dims (int): Channels of the tokens to score.
        tau (float): Gumbel-sigmoid temperature, > 0. It only scales the
            surrogate gradient; the sampled decision does not depend on it.
            Defaults to 5.0.
        threshold (float): Evaluation threshold on ``sigmoid(s)``, in (0, 1).
            Defaults to 0.5.
        float32_scores (bool): Under ``torch.autocast``, compute the scores
            in float32 (the scorer is one ``C -> 1`` product per token, so
            this costs nothing), so that a bf16/fp16 rounding of the score
            does not flip decisions close to the threshold. Defaults to True.
        init_cfg (dict, optional): Initialisation config. The constructor
            already initialises the scorer as DyT does: trunc-normal weights
            (std 0.02), zero bias. Defaults to None.

    Examples:
        >>> import torch
        >>> dispatcher = TokenDispatcher(embed_dims=8).eval()
        >>> dispatcher(torch.randn(2, 5, 8)).shape
        torch.Size([2, 5])
    """

    def __init__(self,
                 embed_dims: int,
                 tau: float = 5.0,
                 threshold: float = 0.5,
                 float32_scores: bool = True,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.float32_scores = float32_scores
        if not isinstance(tau, (int, float)) or not tau > 0:
            raise ValueError(f'tau must be a positive number, got {tau!r}')
        self.tau = float(tau)
        self.threshold = threshold
        self.linear = nn.Linear(embed_dims, 1)
        nn.init.trunc_normal_(self.linear.weight, std=0.02)
        nn.init.zeros_(self.linear.bias)

    @property
    def threshold(self) -> float:
        """float: Evaluation threshold on ``sigmoid(score)``, in (0, 1)."""
        return self._threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        self._threshold = check_open_unit('threshold', value)
        # sigmoid(s) > t  <=>  s > logit(t): compare scores, skip the sigmoid
        self._logit_threshold = math.log(self._threshold /
                                         (1 - self._threshold))

    @property
    def logit_threshold(self) -> float:
        """float: :attr:`threshold` as a logit: evaluation activates the
        tokens whose score (:meth:`score`) is above it."""
        return self._logit_threshold

    def score(self, x: Tensor) -> Tensor:
        """Return the logit of every token, shape ``x.shape[:-1]``.

        Under autocast with ``float32_scores`` the logits are float32.
        """
        device = x.device.type
        if self.float32_scores and autocast_enabled(device):
            with torch.autocast(device, enabled=False):
                return F.linear(x.float(), self.linear.weight.float(),
                                self.linear.bias.float()).squeeze(-1)
        return self.linear(x).squeeze(-1)

    def forward(self, x: Tensor) -> Tensor:
        """Return the activation mask of tokens ``x`` (..., C).

        Returns:
            Tensor: Mask of shape ``x.shape[:-1]`` with values in {0, 1}, in
            the dtype of ``x``. In training it carries the straight-through
            gradient of the Gumbel-sigmoid.
        """
        logits = self.score(x)
        if not self.training:
            return (logits > self._logit_threshold).to(x.dtype)
        # Gumbel(0, 1) = -log(Exp(1))
        g1 = -torch.empty_like(logits).exponential_().log()
        g2 = -torch.empty_like(logits).exponential_().log()
        soft = torch.sigmoid((logits + g1 - g2) / self.tau)
        hard = (soft > 0.5).to(soft.dtype)
        return hard - soft.detach() + soft

    def extra_repr(self) -> str:
        return f'tau={self.tau}, threshold={self.threshold}'
