"""torchvision-backed stand-ins for the compiled mmcv ops Mask R-CNN needs.

Under mmcv-lite (no ``mmcv._ext``), :mod:`mmdyt.compat` installs a stand-in
extension whose ops raise a clear error. Detection needs three of them:
``nms`` (behind ``mmcv.ops.nms`` and ``batched_nms``) and
``roi_align_forward`` / ``roi_align_backward`` (behind ``mmcv.ops.RoIAlign``).
This module gives them the signatures mmcv's Python wrappers call and the
semantics of mmcv's kernels, computed by ``torchvision.ops``:

- ``nms``: greedy IoU suppression in descending score order; boxes are
  ``(x1, y1, x2, y2)`` with ``offset=0`` (areas ``(x2 - x1) * (y2 - y1)``).
  mmcv's legacy ``offset=1`` is not supported by torchvision and raises.
- ``roi_align_forward`` / ``_backward``: average pooling with
  ``aligned`` (the half-pixel shift), ``sampling_ratio`` (0: adaptive, as in
  mmcv) and ``spatial_scale``; max pooling raises. RoIAlign is linear in its
  input, so the backward pass is the vector-Jacobian product of torchvision's
  differentiable ``roi_align``.

Every other compiled op keeps the stand-in's error.
"""
from typing import Callable, Dict

import torch
from torch import Tensor

#: mmcv's ``pool_mode`` code for average pooling (``'max'`` is 0).
_AVG_POOL = 1


def _torchvision_ops():
    try:
        import torchvision.ops
    except ImportError as error:  # pragma: no cover - torchvision is pinned
        raise RuntimeError(
            'mmdyt backs mmcv-lite\'s missing nms/roi_align with '
            'torchvision.ops, which could not be imported') from error
    return torchvision.ops


def nms(bboxes: Tensor,
        scores: Tensor,
        iou_threshold: float,
        offset: int = 0) -> Tensor:
    """Indices of the boxes kept by NMS, by descending score (mmcv's
    ``ext_module.nms``)."""
    if offset != 0:
        raise RuntimeError(
            f'mmdyt.compat: nms with offset={offset} (mmcv\'s legacy box '
            'convention) needs the compiled mmcv; torchvision supports '
            'offset=0 only')
    return _torchvision_ops().nms(bboxes.float(), scores.float(),
                                  float(iou_threshold))


def _check_pool_mode(pool_mode: int) -> None:
    if pool_mode != _AVG_POOL:
        raise RuntimeError(
            "mmdyt.compat: RoIAlign with pool_mode='max' needs the compiled "
            "mmcv; torchvision's roi_align averages (pool_mode='avg')")


def _roi_align(input: Tensor, rois: Tensor, aligned_height: int,
               aligned_width: int, spatial_scale: float, sampling_ratio: int,
               aligned: bool) -> Tensor:
    # torchvision's CPU kernel has no half-precision variant (autocast):
    # compute in float32, the callers write back in their tensors' dtype
    if input.device.type == 'cpu' and input.dtype != torch.float64:
        input = input.float()
    return _torchvision_ops().roi_align(
        input,
        rois.to(input.dtype),
        (aligned_height, aligned_width),
        spatial_scale=spatial_scale,
        sampling_ratio=sampling_ratio,
        aligned=bool(aligned))


def roi_align_forward(input: Tensor, rois: Tensor, output: Tensor,
                      argmax_y: Tensor, argmax_x: Tensor, aligned_height: int,
                      aligned_width: int, spatial_scale: float,
                      sampling_ratio: int, pool_mode: int,
                      aligned: bool) -> None:
    """Write RoIAlign of ``rois`` (K, 5: batch index, x1, y1, x2, y2) over
    ``input`` (N, C, H, W) into ``output`` (mmcv's
    ``ext_module.roi_align_forward``; ``argmax_*`` are unused by average
    pooling)."""
    _check_pool_mode(pool_mode)
    with torch.no_grad():
        output.copy_(
            _roi_align(input, rois, aligned_height, aligned_width,
                       spatial_scale, sampling_ratio, aligned))


def roi_align_backward(grad_output: Tensor, rois: Tensor, argmax_y: Tensor,
                       argmax_x: Tensor, grad_input: Tensor,
                       aligned_height: int, aligned_width: int,
                       spatial_scale: float, sampling_ratio: int,
                       pool_mode: int, aligned: bool) -> None:
    """Add the gradient of RoIAlign with respect to its input to
    ``grad_input`` (mmcv's ``ext_module.roi_align_backward``)."""
    _check_pool_mode(pool_mode)
    with torch.enable_grad():
        # linear in the input: the VJP does not depend on its values
        probe = grad_input.new_zeros(grad_input.shape, requires_grad=True)
        out = _roi_align(probe, rois, aligned_height, aligned_width,
                         spatial_scale, sampling_ratio, aligned)
        grad, = torch.autograd.grad(out, probe, grad_output.to(out.dtype))
    grad_input.add_(grad)


#: The compiled mmcv ops backed here, by their ``mmcv._ext`` name.
OPS: Dict[str, Callable] = {
    'nms': nms,
    'roi_align_forward': roi_align_forward,
    'roi_align_backward': roi_align_backward,
}
