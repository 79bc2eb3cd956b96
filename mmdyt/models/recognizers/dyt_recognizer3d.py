"""DyTRecognizer3D: mmaction2's Recognizer3D with DyT's losses."""
from typing import List, Optional, Tuple

from mmaction.models.recognizers import Recognizer3D
from mmaction.utils import OptSampleList, SampleList
from mmengine.model import merge_dict
from torch import Tensor

from mmdyt.registry import register
from mmdyt.utils.args import suggest_unknown_arguments
from mmdyt.utils.contiguous_linear import ContiguousLinearMixin
from ..dispatch_record import predict_with_dispatch
from ..losses import build_dyt_loss


@register('MODELS', scopes=('mmaction', ))
@suggest_unknown_arguments
class DyTRecognizer3D(ContiguousLinearMixin, Recognizer3D):
    """Recognizer3D whose training adds DyT's rate and distillation losses.

    Losses: the head's (``loss_cls``; ``top1_acc``, ... are logged) plus
    ``loss_rate`` (and the measured rate ``act_rate``, logged); with
    ``dyt_loss=dict(distill=True)`` also ``loss_distill``, the KL divergence
    between the clip logits with and without skipping, and the complete
    model's own classification loss (``complete.loss_cls``). Prediction and
    ``tensor`` mode are mmaction2's, including the multi-view test (views
    ``(N, num_views, C, T, H, W)`` folded into the batch, their scores
    averaged by the head's ``average_clips``). Each predicted data sample
    also carries what DyT did for its clip (all views and frames): the
    metainfo ``act_rate`` and, with ``test_cfg=dict(...,
    return_dispatch_masks=True)`` (or the attribute
    :attr:`return_dispatch_masks`), the masks ``dispatch_masks`` (see
    :func:`predict_with_dispatch`).

    Args:
        dyt_loss (dict, optional): Arguments of :class:`DyTLoss`
            (``target_rate``, ``rate_weight``, ``distill``, ...).
            Defaults to None, i.e. ``DyTLoss()``: rate 0.5, weight 2, no
            distillation.
        **kwargs: The arguments of mmaction2's ``Recognizer3D``; the backbone
            must be a :class:`DyTViT`. With ``dispatch=None`` (the
            adapter-only baseline) there is no rate or distillation loss.
            The head's loss must be ``loss_by_feat(head(feats))``, as
            mmaction2's ``BaseHead`` computes it: the logits are needed for
            the distillation.

    Examples:
        >>> import torch
        >>> from mmaction.registry import MODELS
        >>> from mmaction.structures import ActionDataSample
        >>> from mmengine.registry import init_default_scope
        >>> init_default_scope('mmaction')
        >>> model = MODELS.build(dict(
        ...     type='DyTRecognizer3D',
        ...     backbone=dict(type='DyTViT', arch='tiny', img_size=32,
        ...                   out_type='raw', final_norm=True),
        ...     cls_head=dict(type='AttentivePoolHead', num_classes=4,
        ...                   in_channels=192, num_heads=3),
        ...     dyt_loss=dict(target_rate=0.5, distill=True)))
        >>> clips = torch.randn(2, 1, 3, 4, 32, 32)  # (N, views, C, T, H, W)
        >>> samples = [ActionDataSample().set_gt_label(i) for i in (0, 3)]
        >>> losses = model.loss(clips, samples)
        >>> sorted(losses)  # doctest: +NORMALIZE_WHITESPACE
        ['act_rate', 'complete.loss_cls', 'complete.top1_acc',
         'complete.top5_acc', 'loss_cls', 'loss_distill', 'loss_rate',
         'top1_acc', 'top5_acc']
    """

    def __init__(self, dyt_loss: Optional[dict] = None, **kwargs):
        super().__init__(**kwargs)
        self.dyt_loss = build_dyt_loss(
            type(self).__name__, self.backbone, dyt_loss)
        if not self.with_cls_head:
            raise ValueError('DyTRecognizer3D needs a cls_head')
        self.with_dispatch = bool(self.backbone.dispatch_sites)
        #: Whether predictions carry their per-block dispatch masks.
        self.return_dispatch_masks = bool(
            (self.test_cfg or {}).get('return_dispatch_masks', False))

    def predict(self, inputs: Tensor, data_samples: SampleList,
                **kwargs) -> SampleList:
        """mmaction2's prediction, with DyT's activation rate (and, on
        request, dispatch masks) in every data sample."""
        return predict_with_dispatch(
            self.backbone, lambda: super(DyTRecognizer3D, self).predict(
                inputs, data_samples, **kwargs), self.return_dispatch_masks)

    def extract_feat(self,
                     inputs: Tensor,
                     stage: str = 'neck',
                     data_samples: OptSampleList = None,
                     test_mode: bool = False,
                     complete: bool = False) -> Tuple[tuple, dict]:
        """Features of a batch, as ``Recognizer3D.extract_feat``.

        Args:
            inputs (Tensor): Clips (N, num_views, C, T, H, W).
            stage (str): ``'backbone'``, ``'neck'`` or ``'head'``.
                Defaults to ``'neck'``.
            data_samples (list[ActionDataSample], optional): For the neck.
                Defaults to None.
            test_mode (bool): mmaction2's test path. Defaults to False.
            complete (bool): Run the complete model (every token through
                every block: DyT's distillation teacher) on the training path
                (up to the neck). Defaults to False.

        Returns:
            tuple: The features and the keyword arguments for the head.
        """
        if not complete:
            return super().extract_feat(inputs, stage, data_samples,
                                        test_mode)
        if test_mode or stage not in ('backbone', 'neck'):
            raise ValueError('complete=True is for the training path up to '
                             f"the neck, got test_mode={test_mode}, "
                             f'stage={stage!r}')
        return self._train_feat_with_masks(inputs, stage, data_samples,
                                           complete=True)[:2]

    def _train_feat_with_masks(self,
                               inputs: Tensor,
                               stage: str = 'neck',
                               data_samples: OptSampleList = None,
                               complete: bool = False
                               ) -> Tuple[tuple, dict, List[Tensor]]:
        """Recognizer3D's training path (views folded into the batch) up to
        the neck, with the dispatch masks of this forward."""
        x, masks = self.backbone.forward_with_masks(
            inputs.view((-1, ) + inputs.shape[2:]), complete)
        kwargs = dict(loss_aux=dict())
        if self.with_neck and stage == 'neck':
            x, kwargs['loss_aux'] = self.neck(x, data_samples=data_samples)
        return x, kwargs, masks

    def loss(self, inputs: Tensor, data_samples: SampleList,
             **kwargs) -> dict:
        """Classification, rate and (optionally) distillation losses."""
        feats, loss_kwargs, masks = self._train_feat_with_masks(
            inputs, data_samples=data_samples)
        cls_scores = self.cls_head(feats, **loss_kwargs)
        losses = merge_dict(
            self.cls_head.loss_by_feat(cls_scores, data_samples),
            loss_kwargs.get('loss_aux', dict()))
        if self.dyt_loss.distill:
            teacher_feats, teacher_kwargs = self.extract_feat(
                inputs, data_samples=data_samples, complete=True)
            teacher_scores = self.cls_head(teacher_feats, **teacher_kwargs)
            teacher_losses = merge_dict(
                self.cls_head.loss_by_feat(teacher_scores, data_samples),
                teacher_kwargs['loss_aux'])
            losses.update(
                self.dyt_loss.complete_losses(cls_scores, teacher_scores,
                                              teacher_losses))
        if self.with_dispatch:
            losses.update(self.dyt_loss.rate_losses(masks))
        return losses
