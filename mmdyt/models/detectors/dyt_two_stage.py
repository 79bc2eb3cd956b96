"""DyTTwoStageDetector: mmdet's two-stage detectors with DyT's rate loss."""
from typing import List, Optional, Tuple

from mmdet.models.detectors import TwoStageDetector
from mmdet.structures import SampleList
from torch import Tensor

from mmdyt.registry import register
from mmdyt.utils.args import suggest_unknown_arguments
from mmdyt.utils.contiguous_linear import ContiguousLinearMixin
from ..dispatch_record import predict_with_dispatch
from ..losses import build_dyt_loss


@register('MODELS', scopes=('mmdet', ))
@suggest_unknown_arguments
class DyTTwoStageDetector(ContiguousLinearMixin, TwoStageDetector):
    """mmdet's ``TwoStageDetector`` (Mask R-CNN, Faster R-CNN, ...) whose
    training adds DyT's rate loss.

    Losses: mmdet's (``loss_rpn_cls``, ``loss_rpn_bbox``, ``loss_cls``,
    ``loss_bbox``, ``loss_mask``, ...) plus ``loss_rate`` (and the measured
    rate ``act_rate``, logged) of the backbone's dynamic forward. Prediction
    is mmdet's; each predicted data sample also carries the metainfo
    ``act_rate`` and ``dispatch_grid`` and, with
    ``test_cfg=dict(..., return_dispatch_masks=True)`` (or the attribute
    :attr:`return_dispatch_masks`), the per-block masks ``dispatch_masks``
    (see :func:`~mmdyt.models.dispatch_record.predict_with_dispatch`).

    The paper does not distill detection models (its detection results use
    the rate loss only), and neither does this class: the distillation of
    :class:`~mmdyt.models.DyTLoss` compares class logits of the whole output,
    which a detector's sampled proposals do not give.

    Args:
        dyt_loss (dict, optional): Arguments of :class:`DyTLoss`
            (``target_rate``, ``rate_weight``, ``min_block_rate``); without
            ``distill``. Defaults to None, i.e. rate 0.5, weight 2.
        **kwargs: The arguments of mmdet's ``TwoStageDetector``
            (``backbone``, ``neck``, ``rpn_head``, ``roi_head``,
            ``train_cfg``, ``test_cfg``, ``data_preprocessor``); the backbone
            must be a :class:`DyTViT`. With ``dispatch=None`` (the
            adapter-only baseline) there is no rate loss.
    """

    def __init__(self, dyt_loss: Optional[dict] = None, **kwargs):
        super().__init__(**kwargs)
        self.dyt_loss = build_dyt_loss(
            type(self).__name__, self.backbone, dyt_loss)
        if self.dyt_loss.distill:
            raise ValueError(
                f'{type(self).__name__} does not distill: set '
                'dyt_loss.distill=False (the paper trains detection with '
                'the rate loss only)')
        self.with_dispatch = bool(self.backbone.dispatch_sites)
        #: Whether predictions carry their per-block dispatch masks (mmdet
        #: reads only ``test_cfg.rpn`` and ``test_cfg.rcnn``).
        self.return_dispatch_masks = bool(
            (self.test_cfg or {}).get('return_dispatch_masks', False))

    def extract_feat(self, batch_inputs: Tensor) -> Tuple[Tensor, ...]:
        """The neck's feature maps, contiguous in memory.

        mmcv's compiled ``RoIAlign`` (CPU and CUDA kernels) reads its input
        as a contiguous (N, C, H, W) array whatever its strides. A ViT's
        token grid reshaped to a map, and maps after a channels-first
        LayerNorm, are channels-last in memory, and convolutions keep that
        layout: RoIAlign would pool the wrong values (silently: the RoI head
        then does not learn). Maps that are contiguous already are returned
        as they are.
        """
        return tuple(
            x.contiguous() for x in super().extract_feat(batch_inputs))

    def loss(self, batch_inputs: Tensor,
             batch_data_samples: SampleList) -> dict:
        """mmdet's losses of a batch, plus ``loss_rate`` of the backbone's
        dynamic forward (its masks carry the straight-through gradient)."""
        forwards: List[list] = []
        handle = self.backbone.register_mask_hook(
            lambda masks, inputs: forwards.append(masks))
        try:
            losses = super().loss(batch_inputs, batch_data_samples)
        finally:
            handle.remove()
        if self.with_dispatch:
            if len(forwards) != 1:
                raise RuntimeError(
                    f'expected one backbone forward per loss, got '
                    f'{len(forwards)}')
            losses.update(self.dyt_loss.rate_losses(forwards[0]))
        return losses

    def predict(self,
                batch_inputs: Tensor,
                batch_data_samples: SampleList,
                rescale: bool = True) -> SampleList:
        """mmdet's prediction, with DyT's activation rate (and, on request,
        dispatch masks) in every data sample."""
        return predict_with_dispatch(
            self.backbone, lambda: super(DyTTwoStageDetector, self).predict(
                batch_inputs, batch_data_samples, rescale),
            self.return_dispatch_masks)
