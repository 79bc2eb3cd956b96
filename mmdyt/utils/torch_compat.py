"""The torch APIs whose spelling changed across the versions mmdyt supports.

mmdyt runs on torch 2.1 (the newest torch OpenMMLab's prebuilt mmcv 2.1.0
wheels cover) and on every newer release. The few torch functions it needs
that were added or changed after 2.1 are chosen here once, at import time, so
that models and tools call one name whatever torch is installed:

================================  ============================================
this module                       torch 2.1 spelling -> newer spelling
================================  ============================================
:func:`is_compiling`              ``torch._dynamo.is_compiling`` ->
                                  ``torch.compiler.is_compiling`` (2.3)
:func:`is_exporting`              (no ``torch.export``-based ONNX exporter:
                                  always False) -> ``torch.compiler.
                                  is_exporting`` (2.5)
:func:`autocast_dtype`            ``torch.is_autocast_cpu_enabled``,
                                  ``torch.get_autocast_cpu_dtype``, ... ->
                                  ``torch.is_autocast_enabled(device)``,
                                  ``torch.get_autocast_dtype(device)`` (2.4)
``backward_safe_attention``       (torch < 2.5: no CPU flash attention in a
                                  bfloat16 forward that will be
                                  back-propagated) -> nothing to do
================================  ============================================

Features that need a newer torch than the one installed say so through
:func:`require_torch`, with the feature's name and the version it needs.
"""
import contextlib
import functools
from typing import Callable, ContextManager, Optional

import torch
from mmengine.logging import print_log
from mmengine.utils import digit_version
from torch import Tensor

#: The installed torch, comparable with :func:`mmengine.utils.digit_version`.
TORCH_VERSION = digit_version(torch.__version__)

#: The oldest torch mmdyt supports (``install_requires``).
MIN_TORCH = '2.1.0'

#: ONNX export (``tools/deployment``) through torch's ``torch.export``-based
#: exporter.
ONNX_EXPORT = 'ONNX export (torch.onnx.export with dynamo=True)'

#: ONNX export with an open batch dimension (``dynamic_batch``).
ONNX_DYNAMIC_BATCH = 'ONNX export with a dynamic batch dimension'

#: ``torch.compile(backbone, fullgraph=True)``: the data-dependent gather of
#: the active tokens inside one graph. Older torch compiles DyT too, with a
#: graph break at each gather.
COMPILE_ONE_GRAPH = 'torch.compile of a DyT backbone as one graph'

#: ``tools/analysis_tools/profile_ops.py``: it tells casts apart by the
#: dtypes the profiler records for each op (``FunctionEvent.input_dtypes``,
#: absent from torch 2.9.1's profiler).
PROFILER_DTYPES = 'profile_ops.py (the profiler recording op input dtypes)'

#: Features that need a newer torch than :data:`MIN_TORCH`, and the oldest
#: torch release line they were seen to work on. Tested: torch 2.1.2, 2.5.1,
#: 2.9.1 and 2.14.1. ONNX export fails in ``torch.export`` on 2.5.1 and
#: works on 2.9.1; a dynamic batch and one compiled graph fail on 2.9.1
#: (``nonzero``'s data-dependent shape) and work on 2.14.1.
TORCH_FEATURES = {
    ONNX_EXPORT: '2.9.0',
    ONNX_DYNAMIC_BATCH: '2.14.0',
    COMPILE_ONE_GRAPH: '2.14.0',
    PROFILER_DTYPES: '2.14.0',
}


def torch_at_least(version: str) -> bool:
    """Whether the installed torch is ``version`` or newer.

    Args:
        version (str): A version such as ``'2.5.0'``.

    Returns:
        bool: ``torch.__version__ >= version`` (local tags such as ``+cpu``
        ignored).
    """
    return TORCH_VERSION >= digit_version(version)


def require_torch(feature: str, version: Optional[str] = None) -> None:
    """Raise a clear error if ``feature`` needs a newer torch than installed.

    Args:
        feature (str): The feature's name, a key of :data:`TORCH_FEATURES`
            unless ``version`` is given.
        version (str, optional): The torch version the feature needs.
            Defaults to ``TORCH_FEATURES[feature]``.

    Raises:
        RuntimeError: If the installed torch is older than the version.
    """
    version = version or TORCH_FEATURES[feature]
    if not torch_at_least(version):
        raise RuntimeError(
            f'{feature} needs torch >= {version}; this environment has torch '
            f'{torch.__version__}. Everything else in mmdyt (training, '
            'testing, inference, FLOPs, deployment-free evaluation) works on '
            f'torch >= {MIN_TORCH}.')


if hasattr(torch.compiler, 'is_compiling'):
    is_compiling = torch.compiler.is_compiling
else:  # torch < 2.3
    from torch._dynamo import is_compiling  # noqa: F401

if hasattr(torch.compiler, 'is_exporting'):
    is_exporting = torch.compiler.is_exporting
else:  # torch < 2.5: no torch.export-based ONNX exporter to detect

    def is_exporting() -> bool:
        """Whether ``torch.export`` is tracing (never, before torch 2.5)."""
        return False


if hasattr(torch, 'get_autocast_dtype'):

    def autocast_dtype(device_type: str) -> Optional[torch.dtype]:
        """The dtype autocast computes in on ``device_type``.

        Args:
            device_type (str): ``'cpu'``, ``'cuda'``, ...

        Returns:
            torch.dtype or None: The autocast dtype, or None when autocast
            is off on that device type.
        """
        if torch.is_autocast_enabled(device_type):
            return torch.get_autocast_dtype(device_type)
        return None

else:  # torch < 2.4: one function pair per device type
    _AUTOCAST_GETTERS = {
        'cpu': (torch.is_autocast_cpu_enabled, torch.get_autocast_cpu_dtype),
        'cuda': (torch.is_autocast_enabled, torch.get_autocast_gpu_dtype),
    }

    def autocast_dtype(device_type: str) -> Optional[torch.dtype]:
        """The dtype autocast computes in on ``device_type``.

        Args:
            device_type (str): ``'cpu'``, ``'cuda'``, ...

        Returns:
            torch.dtype or None: The autocast dtype, or None when autocast
            is off on that device type (or, before torch 2.4, on a device
            type other than CPU and CUDA).
        """
        enabled, dtype = _AUTOCAST_GETTERS.get(device_type, (None, None))
        if enabled is not None and enabled():
            return dtype()
        return None


def autocast_enabled(device_type: str) -> bool:
    """Whether autocast is on for ``device_type`` (see
    :func:`autocast_dtype`)."""
    return autocast_dtype(device_type) is not None


#: The first torch tested whose CPU flash attention kernel back-propagates
#: bfloat16 safely: on torch 2.1.2 its backward corrupts the heap (``double
#: free or corruption``, an abort in oneDNN's bfloat16 GEMM) for most shapes;
#: torch 2.5.1 runs the same shapes correctly.
CPU_BF16_FLASH_BACKWARD_SINCE = '2.5.0'

_cpu_bf16_flash_backward_ok = torch_at_least(CPU_BF16_FLASH_BACKWARD_SINCE)
_logged_math_attention = False


def _math_attention() -> ContextManager:
    """``scaled_dot_product_attention`` without the flash kernel."""
    global _logged_math_attention
    if not _logged_math_attention:
        _logged_math_attention = True
        print_log(
            f'mmdyt: torch {torch.__version__} < '
            f'{CPU_BF16_FLASH_BACKWARD_SINCE}: bfloat16 training on the CPU '
            'runs attention without the flash kernel, whose bfloat16 '
            'backward crashes in this torch.',
            logger='current')
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # torch < 2.3
        return torch.backends.cuda.sdp_kernel(enable_flash=False)
    return sdpa_kernel(
        [SDPBackend.MATH, SDPBackend.EFFICIENT_ATTENTION])


def backward_safe_attention(x: Tensor) -> ContextManager:
    """A context for an attention forward on ``x`` that keeps its backward
    away from a torch bug: before torch 2.5, a CPU bfloat16 attention that
    will be back-propagated runs without the flash kernel (see
    :data:`CPU_BF16_FLASH_BACKWARD_SINCE`). Elsewhere, in inference and in
    compiled graphs it does nothing.

    Args:
        x (Tensor): The attention's input.

    Returns:
        A context manager.
    """
    if _cpu_bf16_flash_backward_ok or x.device.type != 'cpu' or \
            not torch.is_grad_enabled() or is_compiling() or \
            (autocast_dtype('cpu') or x.dtype) != torch.bfloat16:
        return contextlib.nullcontext()
    return _math_attention()


def backward_safe_attention_method(method: Callable) -> Callable:
    """Decorate a module method ``method(self, x, ...)`` that runs attention
    on ``x`` with :func:`backward_safe_attention`. On a torch without the
    bug it returns ``method`` itself: nothing is added to the forward.

    Args:
        method (Callable): The method.

    Returns:
        Callable: ``method``, or ``method`` run inside the guard.
    """
    if _cpu_bf16_flash_backward_ok:
        return method

    @functools.wraps(method)
    def guarded(self, x: Tensor, *args, **kwargs):
        with backward_safe_attention(x):
            return method(self, x, *args, **kwargs)

    return guarded
