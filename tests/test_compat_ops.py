"""mmcv's nms / batched_nms / RoIAlign under mmcv-lite, computed by
torchvision (mmdyt.compat_ops), against independent computations."""
import itertools

import pytest
import torch

from mmdyt import compat

pytestmark = pytest.mark.skipif(
    'fix_mmcv_ext' not in compat.APPLIED,
    reason='a compiled mmcv is installed: its own ops run')


def brute_force_nms(boxes, scores, threshold):
    """Greedy NMS written from its definition (offset 0 areas)."""

    def iou(a, b):
        w = max(0., min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0., min(a[3], b[3]) - max(a[1], b[1]))
        inter = w * h
        area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
        return inter / (area - inter)

    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))
    keep = []
    for i in order:
        if all(iou(boxes[i].tolist(), boxes[j].tolist()) <= threshold
               for j in keep):
            keep.append(i)
    return keep


def random_boxes(num, seed, size=20.):
    generator = torch.Generator().manual_seed(seed)
    xy = torch.rand(num, 2, generator=generator) * size
    wh = torch.rand(num, 2, generator=generator) * size / 2 + 1
    boxes = torch.cat([xy, xy + wh], 1)
    # near-duplicates of a third of them, for every threshold to act on
    third = num // 3
    boxes[-third:] = boxes[:third] + torch.rand(
        third, 4, generator=generator) * 0.5
    return boxes, torch.rand(num, generator=generator)


@pytest.mark.parametrize('seed', range(3))
@pytest.mark.parametrize('threshold', [0.3, 0.5, 0.7])
def test_nms_equals_brute_force(seed, threshold):
    from mmcv.ops import nms
    boxes, scores = random_boxes(60, seed)
    dets, keep = nms(boxes, scores, threshold)
    expected = brute_force_nms(boxes, scores, threshold)
    assert keep.tolist() == expected
    torch.testing.assert_close(dets[:, 4], scores[expected])
    torch.testing.assert_close(dets[:, :4], boxes[expected])
    assert 0 < len(expected) < 60  # some boxes were suppressed


def test_batched_nms_suppresses_within_classes_only():
    from mmcv.ops import batched_nms
    boxes, scores = random_boxes(40, 7)
    labels = torch.arange(40) % 3
    dets, keep = batched_nms(boxes, scores, labels,
                             dict(type='nms', iou_threshold=0.5))
    expected = []
    for label in range(3):
        index = (labels == label).nonzero().squeeze(1)
        expected += [int(index[k]) for k in
                     brute_force_nms(boxes[index], scores[index], 0.5)]
    expected.sort(key=lambda i: -float(scores[i]))
    assert keep.tolist() == expected


def test_nms_with_legacy_offset_raises_a_clear_error():
    from mmcv.ops import nms
    boxes, scores = random_boxes(5, 0)
    with pytest.raises(RuntimeError, match='offset=1.*compiled mmcv'):
        nms(boxes, scores, 0.5, offset=1)


def bilinear(feature, y, x):
    """mmcv's bilinear sample of one (H, W) map at (y, x): zero outside
    [-1, H] x [-1, W], clamped to the border inside."""
    height, width = feature.shape
    if y < -1 or y > height or x < -1 or x > width:
        return feature.new_zeros(())
    y, x = max(y, 0.), max(x, 0.)
    y0, x0 = int(y), int(x)
    if y0 >= height - 1:
        y0 = y1 = height - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= width - 1:
        x0 = x1 = width - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    return ((1 - ly) * (1 - lx) * feature[y0, x0] +
            (1 - ly) * lx * feature[y0, x1] + ly * (1 - lx) * feature[y1, x0]
            + ly * lx * feature[y1, x1])


def reference_roi_align(feats, rois, out_size, scale, sampling, aligned):
    """RoIAlign (average) from its definition, one bin at a time; built of
    differentiable torch operations, so autograd gives its gradients."""
    import math
    outputs = []
    offset = 0.5 if aligned else 0.
    for roi in rois:
        index = int(roi[0])
        x1, y1, x2, y2 = [float(v) * scale - offset for v in roi[1:]]
        width, height = x2 - x1, y2 - y1
        if not aligned:
            width, height = max(width, 1.), max(height, 1.)
        bin_h, bin_w = height / out_size, width / out_size
        grid_h = sampling or math.ceil(height / out_size)
        grid_w = sampling or math.ceil(width / out_size)
        count = max(grid_h * grid_w, 1)
        channels = []
        for c in range(feats.shape[1]):
            cells = []
            for ph, pw in itertools.product(range(out_size), repeat=2):
                total = feats.new_zeros(())
                for iy, ix in itertools.product(range(grid_h), range(grid_w)):
                    y = y1 + ph * bin_h + (iy + .5) * bin_h / grid_h
                    x = x1 + pw * bin_w + (ix + .5) * bin_w / grid_w
                    total = total + bilinear(feats[index, c], y, x)
                cells.append(total / count)
            channels.append(torch.stack(cells).view(out_size, out_size))
        outputs.append(torch.stack(channels))
    return torch.stack(outputs)


ROIS = torch.tensor([[0, 1.0, 1.5, 9.0, 7.0], [1, 0.0, 0.0, 15.0, 15.0],
                     [0, -2.0, 3.0, 4.5, 20.0], [1, 5.2, 6.1, 5.9, 6.4]])


@pytest.mark.parametrize('aligned', [True, False])
@pytest.mark.parametrize('sampling_ratio', [0, 2])
def test_roi_align_and_its_gradient_equal_the_definition(
        aligned, sampling_ratio):
    from mmcv.ops import RoIAlign
    generator = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 2, 8, 8, generator=generator, requires_grad=True)
    layer = RoIAlign(3, spatial_scale=0.5, sampling_ratio=sampling_ratio,
                     aligned=aligned)
    out = layer(feats, ROIS)
    expected = reference_roi_align(feats, ROIS, 3, 0.5, sampling_ratio,
                                   aligned)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    weights = torch.randn(out.shape, generator=generator)
    grad, = torch.autograd.grad((out * weights).sum(), feats)
    expected_grad, = torch.autograd.grad((expected * weights).sum(), feats)
    torch.testing.assert_close(grad, expected_grad, atol=1e-5, rtol=1e-5)
    assert grad.abs().sum() > 0


def test_roi_align_max_pooling_raises_a_clear_error():
    from mmcv.ops import RoIAlign
    layer = RoIAlign(2, pool_mode='max')
    with pytest.raises(RuntimeError, match="pool_mode='max'.*compiled mmcv"):
        layer(torch.randn(1, 1, 4, 4), ROIS[:1].clone().fill_(0))
