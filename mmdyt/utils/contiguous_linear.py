"""Low-precision ``F.linear`` on the CPU without per-row weight copies,
inside mmdyt's task models only.

On the CPU, a bfloat16 (or float16) ``F.linear`` of a 3-D input whose rows
cannot be flattened into one matrix (a transposed or sliced tensor) runs as a
``bmm`` against the weight broadcast to every row, and torch's low-precision
CPU ``bmm`` copies a broadcast operand once per batch entry (pytorch#151934):
one weight copy per token. mmcv's ``MultiheadAttention`` (batch-first inputs,
transposed for ``nn.MultiheadAttention``) and mmseg's Segmenter head (its
projections of token slices) hit it under ``--amp`` with more than one image
or crop per forward: 9x slower than float32 there.

:func:`contiguous_low_precision_linear` makes such inputs contiguous first
(in the compute dtype: one copy of the activations instead of one copy of the
weight per row), and only while it is entered. mmdyt's task models
(:class:`ContiguousLinearMixin`) enter it around a low-precision
``forward``, so their heads from mmseg / mmcv get the fix too; importing
mmdyt changes nothing for other code, and ``torch.nn.functional.linear`` is
the original again as soon as the model returns.
"""
import functools
import threading
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .torch_compat import autocast_dtype, is_compiling

#: Dtypes whose CPU ``bmm`` copies broadcast operands.
COPYING_BMM_DTYPES = (torch.bfloat16, torch.float16)

_lock = threading.Lock()
_depth = 0
_original: Optional[Callable] = None


@functools.lru_cache(maxsize=None)
def linear_copies_weight_per_row() -> bool:
    """Whether this torch runs a CPU bfloat16 ``F.linear`` of a transposed
    3-D input as a ``bmm`` against the weight expanded to every row.

    Probed once per process, on tiny tensors.
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    class Record(TorchDispatchMode):

        def __init__(self):
            super().__init__()
            self.broadcast = False

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten.bmm.default and \
                    args[1].stride(0) == 0:
                self.broadcast = True
            return func(*args, **(kwargs or {}))

    # the same answer whatever mode the first caller is in: under
    # inference_mode the dispatch mode does not see the bmm, and autocast
    # would change the dtypes
    with torch.inference_mode(False), torch.autocast('cpu', enabled=False):
        rows = torch.zeros(2, 3, 8, dtype=torch.bfloat16).transpose(0, 1)
        with Record() as record:
            F.linear(rows, torch.zeros(4, 8, dtype=torch.bfloat16))
    return record.broadcast


def _contiguous_linear(linear: Callable) -> Callable:
    """``linear`` that first makes a non-flattenable CPU input of 3 or more
    dimensions contiguous when it computes in low precision."""

    def contiguous_linear(input: Tensor,
                          weight: Tensor,
                          bias: Optional[Tensor] = None) -> Tensor:
        if input.dim() > 2 and input.device.type == 'cpu' and \
                not input.is_contiguous():
            dtype = autocast_dtype('cpu') or input.dtype
            if dtype in COPYING_BMM_DTYPES:
                # (``to`` returns a tensor of the right dtype as it is)
                input = input.contiguous() if dtype == input.dtype else \
                    input.to(dtype, memory_format=torch.contiguous_format)
        return linear(input, weight, bias)

    contiguous_linear.__doc__ = linear.__doc__
    contiguous_linear.__wrapped__ = linear
    return contiguous_linear


@contextmanager
def contiguous_low_precision_linear() -> Iterator[bool]:
    """Within this context, ``F.linear`` (and so every ``nn.Linear``) makes
    low-precision CPU inputs that would take torch's per-row weight copy
    contiguous first; float32, CUDA and contiguous inputs pass through.

    It does nothing where this torch has no such copy, or while
    ``torch.compile`` traces (a graph makes its own layouts). Re-entrant and
    thread-safe: ``F.linear`` is restored when the outermost context exits.

    Yields:
        bool: Whether the fix is active in this context.
    """
    global _depth, _original
    if is_compiling() or not linear_copies_weight_per_row():
        yield False
        return
    with _lock:
        if _depth == 0:
            _original = F.linear
            F.linear = _contiguous_linear(_original)
        _depth += 1
    try:
        yield True
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                F.linear = _original
                _original = None


def may_compute_in_low_precision(module: nn.Module) -> bool:
    """Whether ``module`` may run CPU matmuls in bfloat16 or float16: under
    CPU autocast in such a dtype, or with such weights."""
    if autocast_dtype('cpu') in COPYING_BMM_DTYPES:
        return True
    weight = next(module.parameters(), None)
    return weight is not None and weight.dtype in COPYING_BMM_DTYPES


class ContiguousLinearMixin:
    """Runs a model's ``forward`` inside
    :func:`contiguous_low_precision_linear` when it may compute in low
    precision (mmdyt's task models mix it in before the library's base
    class; a float32 forward runs as it is)."""

    def forward(self, *args, **kwargs):
        """The base class's ``forward``, with the low-precision linear fix
        active while it runs in bfloat16 or float16."""
        if not may_compute_in_low_precision(self):
            return super().forward(*args, **kwargs)
        with contiguous_low_precision_linear():
            return super().forward(*args, **kwargs)
