"""The CPU low-precision linear fix: active inside mmdyt's task models only,
never a process-wide change of ``F.linear``."""
import subprocess
import sys
import threading

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmdyt.utils.contiguous_linear import (ContiguousLinearMixin,
                                           contiguous_low_precision_linear,
                                           linear_copies_weight_per_row)


def _broadcast_bmms(fn):
    """The ``bmm`` calls of ``fn()`` whose second operand is broadcast
    over the batch (the weight expanded to every row), and its output."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Record(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten.bmm.default and args[1].stride(0) == 0:
                Record.calls += 1
            return func(*args, **(kwargs or {}))

    with Record():
        out = fn()
    return Record.calls, out


def _low_precision_dtypes():
    """bfloat16, and float16 where this torch has a CPU float16 bmm (torch
    2.1 has none)."""
    try:
        torch.zeros(1, 1, 1, dtype=torch.float16).bmm(
            torch.zeros(1, 1, 1, dtype=torch.float16))
    except RuntimeError:
        return (torch.bfloat16, )
    return (torch.bfloat16, torch.float16)


needs_the_fix = pytest.mark.skipif(
    not linear_copies_weight_per_row(),
    reason='this torch runs transposed low-precision linears without a '
    'broadcast bmm: nothing to fix')


def test_probe_answers_alike_in_every_mode():
    """The probe gives the same answer whether its first caller runs under
    inference_mode (as benchmarks and inferencers do), no_grad or autocast:
    under inference_mode it once saw no bmm, which left the fix off for the
    whole process."""
    answers = []
    for mode in (torch.inference_mode, torch.no_grad,
                 lambda: torch.autocast('cpu', dtype=torch.bfloat16)):
        linear_copies_weight_per_row.cache_clear()
        with mode():
            answers.append(linear_copies_weight_per_row())
    linear_copies_weight_per_row.cache_clear()
    assert answers == [linear_copies_weight_per_row()] * 3


def test_importing_mmdyt_leaves_f_linear_alone():
    """The check users run: ``import mmdyt`` replaces nothing in torch."""
    code = ('import torch.nn.functional as F; f = F.linear; import mmdyt; '
            'import mmdyt.models; assert F.linear is f, F.linear')
    subprocess.run([sys.executable, '-c', code], check=True)


@needs_the_fix
def test_low_precision_linear_takes_no_broadcast_bmm():
    """torch's own linear sends a transposed bf16 input to a bmm against the
    broadcast weight (which copies it per row, pytorch#151934); inside the
    context it does not, computes the same, and F.linear is restored
    after."""
    original = F.linear
    weight = torch.randn(16, 8)
    rows = torch.randn(3, 5, 8).transpose(0, 1)  # (5, 3, 8), transposed
    for dtype in _low_precision_dtypes():
        x, w = rows.to(dtype), weight.to(dtype)
        calls, want = _broadcast_bmms(lambda: F.linear(x, w))
        assert calls == 1  # the problem, with this torch
        with contiguous_low_precision_linear() as active:
            assert active and F.linear is not original
            calls, got = _broadcast_bmms(lambda: F.linear(x, w))
        assert calls == 0
        torch.testing.assert_close(got.float(), want.float(), rtol=1e-2,
                                   atol=1e-2)
    assert F.linear is original
    with contiguous_low_precision_linear():
        with torch.autocast('cpu', dtype=torch.bfloat16):
            calls, got = _broadcast_bmms(lambda: F.linear(rows, weight))
        assert calls == 0 and got.dtype == torch.bfloat16
        # float32 inputs are passed through as they are
        calls, got = _broadcast_bmms(lambda: F.linear(rows, weight))
        assert calls == 1
        torch.testing.assert_close(got, original(rows, weight))
    assert F.linear is original


@needs_the_fix
def test_nested_and_threaded_contexts_restore_f_linear():
    """The outermost exit restores F.linear, also when an exception leaves
    the context and when threads enter it at the same time."""
    original = F.linear
    with contiguous_low_precision_linear():
        patched = F.linear
        with contiguous_low_precision_linear():
            assert F.linear is patched
        assert F.linear is patched
    assert F.linear is original
    with pytest.raises(ValueError):
        with contiguous_low_precision_linear():
            raise ValueError
    assert F.linear is original

    barrier = threading.Barrier(4)

    def enter():
        with contiguous_low_precision_linear():
            barrier.wait(timeout=10)

    threads = [threading.Thread(target=enter) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert F.linear is original


@needs_the_fix
def test_segmenter_head_in_a_dyt_model_copies_no_weights():
    """Where the fix matters: mmseg's Segmenter mask transformer (mmcv's
    batch-first MultiheadAttention, projections of token slices) on two
    crops under CPU autocast, run as part of a model with the mixin; the
    same head outside such a model is left to torch."""
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    head = MODELS.build(dict(
        type='SegmenterMaskTransformerHead', in_channels=32, channels=32,
        num_classes=5, num_layers=1, num_heads=2, embed_dims=32)).eval()

    class Base(nn.Module):  # stands for the library's model class

        def __init__(self):
            super().__init__()
            self.head = head

        def forward(self, features):
            return self.head(features)

    class Model(ContiguousLinearMixin, Base):
        pass

    features = [torch.randn(2, 32, 4, 4)]
    with torch.no_grad():
        want = head(features)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            calls, got = _broadcast_bmms(lambda: Model()(features))
            assert calls == 0
            calls, _ = _broadcast_bmms(lambda: head(features))
            assert calls > 0
    torch.testing.assert_close(got.float(), want, rtol=0.05, atol=0.05)


@needs_the_fix
def test_the_mixin_acts_in_low_precision_only():
    """A float32 forward runs with torch's own F.linear; under bfloat16
    autocast, and with bfloat16 weights, with the fix."""
    original = F.linear
    seen = []

    class Base(nn.Module):

        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 4)

        def forward(self, x):
            seen.append(F.linear is original)
            return self.linear(x)

    class Model(ContiguousLinearMixin, Base):
        pass

    model = Model()
    model(torch.randn(2, 4))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        model(torch.randn(2, 4))
    model.to(torch.bfloat16)(torch.randn(2, 4, dtype=torch.bfloat16))
    assert seen == [True, False, False]
    assert F.linear is original
