"""DyTEncoderDecoder: mmseg's EncoderDecoder with DyT's losses."""
from typing import List, Optional, Tuple

from mmseg.models.segmentors import EncoderDecoder
from mmseg.utils import OptSampleList, SampleList, add_prefix
from torch import Tensor

from mmdyt.registry import register
from mmdyt.utils.args import suggest_unknown_arguments
from mmdyt.utils.contiguous_linear import ContiguousLinearMixin
from ..dispatch_record import predict_with_dispatch
from ..losses import build_dyt_loss
from .batched_slide import (batched_slide_inference, check_crop_batch,
                            crop_windows, resolve_crop_batch)


@register('MODELS', scopes=('mmseg', ))
@suggest_unknown_arguments
class DyTEncoderDecoder(ContiguousLinearMixin, EncoderDecoder):
    """EncoderDecoder whose training adds DyT's rate and distillation losses.

    Losses: mmseg's (``decode.loss_ce``, ``aux.loss_ce``, ...) plus
    ``loss_rate`` (and the measured rate ``act_rate``, logged); with
    ``dyt_loss=dict(distill=True)`` also ``loss_distill``, the per-pixel KL
    between the decode head's logits with and without skipping, and the
    complete model's own decode loss (``complete.decode.loss_ce``).
    Prediction and ``tensor`` mode are mmseg's; each predicted data sample
    also carries what DyT did for its image: the metainfo ``act_rate`` and,
    with ``test_cfg=dict(..., return_dispatch_masks=True)`` (or the
    attribute :attr:`return_dispatch_masks`), the per-block masks
    ``dispatch_masks`` (see :func:`predict_with_dispatch`).

    Sliding-window inference (``test_cfg=dict(mode='slide', crop_size=...,
    stride=..., crop_batch=K)``) runs the crops of the batch (of every image
    in it) through the backbone, neck and head ``K`` at a time
    (:func:`~.batched_slide.batched_slide_inference`) instead of mmseg's one
    forward per crop position: the same logits up to float rounding, fewer
    and larger matmuls. ``crop_batch=None`` (the default) takes all crops of
    the batch at once, up to 8 crops of 512 x 512 per forward
    (:data:`~.batched_slide.AUTO_CROP_PIXELS`); ``crop_batch=1`` is mmseg's
    crop-by-crop inference.

    Args:
        dyt_loss (dict, optional): Arguments of :class:`DyTLoss`
            (``target_rate``, ``rate_weight``, ``distill``, ...).
            Defaults to None, i.e. ``DyTLoss()``: rate 0.5, weight 2, no
            distillation.
        **kwargs: The arguments of mmseg's ``EncoderDecoder``; the backbone
            must be a :class:`DyTViT`. With ``dispatch=None`` (the
            adapter-only baseline) there is no rate or distillation loss.
    """

    def __init__(self, dyt_loss: Optional[dict] = None, **kwargs):
        super().__init__(**kwargs)
        self.dyt_loss = build_dyt_loss(
            type(self).__name__, self.backbone, dyt_loss)
        self.with_dispatch = bool(self.backbone.dispatch_sites)
        #: Whether predictions carry their per-block dispatch masks.
        self.return_dispatch_masks = bool(
            (self.test_cfg or {}).get('return_dispatch_masks', False))
        check_crop_batch((self.test_cfg or {}).get('crop_batch'))
        #: While a prediction runs: the sample of every backbone row a
        #: batched sliding window sends (None: one forward per position).
        self._row_samples: Optional[List[int]] = None

    def predict(self,
                inputs: Tensor,
                data_samples: OptSampleList = None) -> SampleList:
        """mmseg's prediction, with DyT's activation rate (and, on request,
        dispatch masks) in every data sample."""
        self._row_samples = []
        try:
            return predict_with_dispatch(
                self.backbone,
                lambda: super(DyTEncoderDecoder, self).predict(
                    inputs, data_samples), self.return_dispatch_masks,
                row_samples=self._row_samples)
        finally:
            self._row_samples = None

    def slide_inference(self, inputs: Tensor,
                        batch_img_metas: List[dict]) -> Tensor:
        """Sliding-window inference, ``test_cfg.crop_batch`` crops per
        forward (see the class docstring); mmseg's own for
        ``crop_batch=1``."""
        crop_size = tuple(self.test_cfg.crop_size)
        stride = tuple(self.test_cfg.stride)
        num_crops = inputs.shape[0] * len(
            crop_windows(inputs.shape[2:], crop_size, stride))
        crop_batch = resolve_crop_batch(
            check_crop_batch(self.test_cfg.get('crop_batch')), num_crops,
            crop_size)
        if crop_batch == 1:
            return super().slide_inference(inputs, batch_img_metas)
        return batched_slide_inference(
            self.encode_decode, inputs, batch_img_metas, self.out_channels,
            crop_size, stride, crop_batch, self._row_samples)

    def extract_feat_with_masks(self,
                                inputs: Tensor,
                                complete: bool = False
                                ) -> Tuple[List[Tensor], List[Tensor]]:
        """Backbone (and neck) features with the dispatch masks of this
        forward; ``complete`` skips no token (its masks are all ones)."""
        x, masks = self.backbone.forward_with_masks(inputs, complete)
        if self.with_neck:
            x = self.neck(x)
        return x, masks

    def extract_feat(self, inputs: Tensor, complete: bool = False
                     ) -> List[Tensor]:
        """Backbone (and neck) features; ``complete`` skips no token."""
        return self.extract_feat_with_masks(inputs, complete)[0]

    def loss(self, inputs: Tensor, data_samples: SampleList) -> dict:
        """Task, rate and (optionally) distillation losses of a batch."""
        x, masks = self.extract_feat_with_masks(inputs)
        seg_logits = self.decode_head(x)
        losses = add_prefix(
            self.decode_head.loss_by_feat(seg_logits, data_samples),
            'decode')
        if self.with_auxiliary_head:
            losses.update(self._auxiliary_head_forward_train(x, data_samples))
        if self.dyt_loss.distill:
            teacher_logits = self.decode_head(
                self.extract_feat(inputs, complete=True))
            teacher_losses = add_prefix(
                self.decode_head.loss_by_feat(teacher_logits, data_samples),
                'decode')
            losses.update(
                self.dyt_loss.complete_losses(seg_logits, teacher_logits,
                                              teacher_losses))
        if self.with_dispatch:
            losses.update(self.dyt_loss.rate_losses(masks))
        return losses
