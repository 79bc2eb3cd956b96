"""FLOPs of arbitrary modules with mmengine's counter, DyT-aware.

mmengine's :class:`~mmengine.analysis.FlopAnalyzer` (a port of fvcore's)
traces a forward and counts multiply-accumulates per operator. It has no
rule for three operators mmdyt's models use, so they would count as zero:

- ``aten::scaled_dot_product_attention``: timm's attention and DyT's
  query-subset attention (counted as its two matmuls);
- ``aten::baddbmm``: the merged MoE-adapter (counted as its batched matmul);
- ``aten::addmm_``: the in-place matmuls of DyT's evaluation, which add the
  adapter's up-projection and the MLP's ``fc2`` into the stream (counted as
  ``aten::addmm``).

:func:`count_flops` adds these rules; heads, necks and whole models are then
counted as mmengine counts them.
"""
from math import prod
from typing import Any, Dict, List, Tuple, Union

import torch.nn as nn
from mmengine.analysis import FlopAnalyzer
from mmengine.analysis.jit_handles import addmm_flop_jit, get_shape


def sdpa_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """FLOPs of ``scaled_dot_product_attention(q, k, v)``.

    ``q k^T`` and ``softmax(.) v`` are two batched matmuls:
    ``B H L S (D + Dv)`` multiply-accumulates for queries (B, H, L, D), keys
    (B, H, S, D) and values (B, H, S, Dv).
    """
    q_shape, k_shape, v_shape = (get_shape(v) for v in inputs[:3])
    *batch, queries, dims = q_shape
    keys = k_shape[-2]
    return prod(batch) * queries * keys * (dims + v_shape[-1])


def baddbmm_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """FLOPs of ``baddbmm(bias, a, b)``: the batched matmul ``a @ b``."""
    batch, rows, inner = get_shape(inputs[1])
    cols = get_shape(inputs[2])[-1]
    return batch * rows * inner * cols


#: Operator rules :func:`count_flops` adds to mmengine's defaults.
EXTRA_OP_HANDLES = {
    'aten::scaled_dot_product_attention': sdpa_flop_jit,
    'aten::baddbmm': baddbmm_flop_jit,
    'aten::addmm_': addmm_flop_jit,
}


def flop_analyzer(module: nn.Module,
                  inputs: Union[Any, Tuple[Any, ...]]) -> FlopAnalyzer:
    """An mmengine :class:`FlopAnalyzer` with :data:`EXTRA_OP_HANDLES`.

    Warnings about operators without FLOPs (activations, additions, ...) and
    about modules the forward does not call are switched off.

    Args:
        module (nn.Module): The module to count, in the mode it will run
            (``eval()`` for inference FLOPs).
        inputs (Any | tuple): The forward's positional arguments (a tuple),
            or its only argument.
    """
    if not isinstance(inputs, tuple):
        inputs = (inputs, )
    analyzer = FlopAnalyzer(module, inputs)
    for name, handle in EXTRA_OP_HANDLES.items():
        analyzer.set_op_handle(name, handle)
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    analyzer.tracer_warnings('none')
    return analyzer


def count_flops(module: nn.Module, inputs: Union[Any, Tuple[Any,
                                                            ...]]) -> int:
    """Multiply-accumulates of one forward of ``module`` on ``inputs``.

    Args:
        module (nn.Module): The module to count.
        inputs (Any | tuple): The forward's positional arguments (a tuple),
            or its only argument.

    Returns:
        int: The total FLOPs of the traced forward.

    Examples:
        >>> import torch
        >>> count_flops(nn.Linear(8, 4), torch.randn(2, 8))
        64
    """
    return int(flop_analyzer(module, inputs).total())


def flops_by_operator(module: nn.Module,
                      inputs: Union[Any, Tuple[Any, ...]]) -> Dict[str, int]:
    """FLOPs of one forward of ``module`` per operator type."""
    return dict(flop_analyzer(module, inputs).by_operator())
