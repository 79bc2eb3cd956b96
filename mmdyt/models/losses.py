"""DyT's training losses, shared by the segmentor and the recognizer."""
from typing import Dict, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor

from mmdyt.utils.args import suggest_unknown_arguments
from .layers.dispatcher import mean_rate


def rate_loss(masks: Sequence[Tensor], target: float) -> Tensor:
    """``(mean(M) - r)^2`` over the straight-through masks ``M``."""
    return (mean_rate(masks) - target).square()


def block_floor_loss(masks: Sequence[Tensor], min_rate: float) -> Tensor:
    """Mean over dispatchers of ``relu(min_rate - mean(M_l))^2``: keeps each
    block's activation rate above ``min_rate``."""
    return torch.stack([
        F.relu(min_rate - m.mean()).square() for m in masks
    ]).mean()


def distill_loss(student: Tensor, teacher: Tensor, dim: int = 1) -> Tensor:
    """``KL(p_teacher || p_student)`` of logits, teacher detached.

    The KL divergence is summed over the class dimension ``dim`` and averaged
    over all other dimensions: for ``(N, K)`` logits this is
    ``F.kl_div(..., reduction='batchmean')``, for ``(N, K, H, W)`` maps the
    per-pixel mean.

    Args:
        student (Tensor): Logits of the dynamic model.
        teacher (Tensor): Logits of the complete model (detached here).
        dim (int): The class dimension. Defaults to 1.
    """
    if student.shape != teacher.shape:
        raise ValueError(f'student logits {tuple(student.shape)} and teacher '
                         f'logits {tuple(teacher.shape)} differ in shape')
    kl = F.kl_div(
        F.log_softmax(student.float(), dim=dim),
        F.log_softmax(teacher.detach().float(), dim=dim),
        reduction='none',
        log_target=True)
    return kl.sum(dim=dim).mean()


@suggest_unknown_arguments
class DyTLoss(BaseModule):
    """The losses DyT adds to a task loss (docs/en/advanced_guides/method.md).

    ``L = L_task + c * L_task_complete + d * L_distill + w * L_rate``: the
    rate loss pulls the mean activation rate of the dynamic forward to
    ``target_rate``; with ``distill=True`` the "complete" model (same weights,
    every token active) adds its own task loss and teaches the dynamic model
    through a KL divergence of logits.

    Args:
        target_rate (float): Target activation rate ``r`` in (0, 1].
            Defaults to 0.5.
        rate_weight (float): Weight ``w`` of the rate loss. Defaults to 2.0.
        min_block_rate (float): If > 0, adds a per-block floor term keeping
            each block's rate above it (same weight). Defaults to 0.
        distill (bool): Whether to run the complete model and add its task
            loss and the distillation loss. Defaults to False.
        distill_weight (float): Weight ``d``. Defaults to 1.0.
        complete_weight (float): Weight ``c``. Defaults to 1.0.
        init_cfg (dict, optional): Unused; for the BaseModule interface.
    """

    def __init__(self,
                 target_rate: float = 0.5,
                 rate_weight: float = 2.0,
                 min_block_rate: float = 0.,
                 distill: bool = False,
                 distill_weight: float = 1.0,
                 complete_weight: float = 1.0,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        if not isinstance(target_rate, (int, float)) or \
                not 0 < target_rate <= 1:
            raise ValueError(
                f'target_rate must be in (0, 1], got {target_rate!r}')
        if not 0 <= min_block_rate < 1:
            raise ValueError(
                f'min_block_rate must be in [0, 1), got {min_block_rate!r}')
        self.target_rate = float(target_rate)
        self.rate_weight = rate_weight
        self.min_block_rate = min_block_rate
        self.distill = distill
        self.distill_weight = distill_weight
        self.complete_weight = complete_weight

    def rate_losses(self, masks: Sequence[Tensor]) -> Dict[str, Tensor]:
        """``loss_rate`` and the measured rate ``act_rate`` (logged only: its
        name has no "loss") of the dynamic forward's masks."""
        if not masks:
            raise ValueError(
                'the backbone recorded no dispatch masks: DyTLoss needs a '
                "DyTViT with a dispatcher (dispatch is not None) whose "
                'forward ran with complete=False')
        losses = dict(
            loss_rate=self.rate_weight * rate_loss(masks, self.target_rate),
            act_rate=mean_rate(masks).detach())
        if self.min_block_rate > 0:
            losses['loss_rate_floor'] = self.rate_weight * block_floor_loss(
                masks, self.min_block_rate)
        return losses

    def complete_losses(self, student_logits: Tensor, teacher_logits: Tensor,
                        teacher_task_losses: Dict[str, Tensor],
                        class_dim: int = 1) -> Dict[str, Tensor]:
        """``loss_distill`` plus the complete model's task losses, renamed
        ``complete.<name>`` and weighted."""
        losses = {
            f'complete.{name}':
            value * self.complete_weight if 'loss' in name else value
            for name, value in teacher_task_losses.items()
        }
        losses['loss_distill'] = self.distill_weight * distill_loss(
            student_logits, teacher_logits, dim=class_dim)
        return losses


def build_dyt_loss(owner: str, backbone: nn.Module,
                   dyt_loss: Optional[dict]) -> DyTLoss:
    """The :class:`DyTLoss` of a DyT task model, checked against its
    backbone.

    Args:
        owner (str): The task model's class name, for the messages.
        backbone (nn.Module): Its backbone, which must be a ``DyTViT``.
        dyt_loss (dict, optional): Arguments of :class:`DyTLoss`; None for
            the defaults.

    Raises:
        ValueError: If the backbone is not a ``DyTViT``, or distillation is
            asked of a backbone without dispatchers (adapter-only).
    """
    if not hasattr(backbone, 'dispatch_sites'):
        raise ValueError(f'{owner} needs a DyTViT backbone, got '
                         f'{type(backbone).__name__}')
    loss = DyTLoss(**(dyt_loss or {}))
    if loss.distill and not backbone.dispatch_sites:
        raise ValueError(
            'dyt_loss.distill=True needs token dispatchers: without '
            'them (dispatch=None) the complete model is the model')
    return loss
