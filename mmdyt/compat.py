"""Fixes for known breakages of the supported upstream packages.

``import mmdyt`` runs :func:`apply_all` before anything else, so that every
entry point (``tools/train.py``, ``custom_imports=dict(imports=['mmdyt'])``,
a notebook) gets the same, working environment. Each fix checks that its
problem is really present, acts only then, and logs once what it did:

1. mmcv-lite ships no compiled ``mmcv._ext``, yet mmseg 1.2.2 imports
   ``mmcv.ops`` at module level, so ``import mmseg.models`` fails. A stand-in
   ``mmcv._ext`` lets the import succeed; calling a compiled op raises a
   :class:`RuntimeError` naming the op and the remedy. Pure-PyTorch ops such as
   ``point_sample`` keep working, and the three ops Mask R-CNN needs (``nms``,
   ``roi_align_forward``/``_backward``) are computed by ``torchvision.ops``
   (:mod:`mmdyt.compat_ops`).
2. The mmaction2 1.2.0 wheel lacks ``mmaction/models/localizers/drn``
   (upstream issue 2714), so ``import mmaction.models`` fails. Stand-in modules
   provide a ``DRN`` that raises a clear error when built.
3. torch >= 2.6 loads checkpoints with ``weights_only=True``; mmengine 0.10.7
   calls ``torch.load`` without the argument, so its own checkpoints (with the
   message hub's ``HistoryBuffer`` and numpy arrays inside) fail to load. The
   globals such checkpoints need are allow-listed; ``weights_only`` itself is
   never turned off.

The fixes are narrow: none changes what torch or the OpenMMLab libraries do
for code that works without it. (mmdyt's CPU low-precision ``F.linear`` fix
is no process-wide patch: it is active only while mmdyt's own models run,
see :mod:`mmdyt.utils.contiguous_linear`.)
"""
import importlib.machinery
import importlib.util
import io
import os
import pickle
import sys
import types
from typing import Any, Callable, List

from mmengine.logging import print_log

#: Names of the fixes that :func:`apply_all` applied in this process.
APPLIED: List[str] = []

_MMCV_REMEDY = (
    'mmcv-lite has no compiled ops. Install the full mmcv 2.1.0 instead, '
    "e.g. `pip install -U openmim && mim install 'mmcv==2.1.0'` (prebuilt "
    'wheels for CUDA builds of torch) or `MMCV_WITH_OPS=1 pip install '
    '--no-build-isolation mmcv==2.1.0` (builds from source).')


def _missing_op(name: str) -> Callable[..., Any]:
    """Return a function that raises a clear error for a compiled mmcv op."""

    def op(*args, **kwargs):
        raise RuntimeError(
            f'mmcv op `{name}` needs the compiled extension `mmcv._ext`, '
            f'which is not installed. {_MMCV_REMEDY}')

    op.__name__ = name
    return op


class _MissingMMCVExt(types.ModuleType):
    """Stand-in for ``mmcv._ext``: every attribute is an op that raises."""

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith('__'):
            raise AttributeError(name)
        return _missing_op(name)


def fix_mmcv_ext() -> bool:
    """Provide a stand-in ``mmcv._ext`` when mmcv's compiled ops are missing.

    Returns:
        bool: Whether the stand-in was installed.
    """
    if 'mmcv._ext' in sys.modules:
        return False
    if importlib.util.find_spec('mmcv') is None:
        return False
    if importlib.util.find_spec('mmcv._ext') is not None:
        return False  # full mmcv: nothing to fix
    import mmcv
    module = _MissingMMCVExt('mmcv._ext',
                             'Stand-in installed by mmdyt.compat.')
    # A spec without a loader: `mmcv.utils.ext_loader.check_ops_exist()` and
    # `pkgutil.find_loader` keep reporting that the compiled ops are absent.
    module.__spec__ = importlib.machinery.ModuleSpec('mmcv._ext', None)
    from .compat_ops import OPS
    for name, op in OPS.items():
        setattr(module, name, op)
    sys.modules['mmcv._ext'] = module
    mmcv._ext = module
    print_log(
        'mmdyt.compat: mmcv has no compiled ops (mmcv-lite); installed a '
        'stand-in `mmcv._ext` so that mmseg and mmdet import. '
        f'{", ".join(sorted(OPS))} are computed by torchvision.ops; other '
        'compiled ops raise a RuntimeError if called; pure-PyTorch ops work.',
        logger='current')
    return True


def _mmaction_root() -> str:
    spec = importlib.util.find_spec('mmaction')
    if spec is None or not spec.submodule_search_locations:
        return ''
    return list(spec.submodule_search_locations)[0]


def fix_mmaction_drn() -> bool:
    """Provide stand-in ``mmaction.models.localizers.drn`` modules if missing.

    Returns:
        bool: Whether the stand-in modules were installed.
    """
    root = _mmaction_root()
    if not root:
        return False
    localizers = os.path.join(root, 'models', 'localizers')
    if (not os.path.isdir(localizers)
            or os.path.exists(os.path.join(localizers, 'drn', 'drn.py'))
            or 'mmaction.models.localizers.drn' in sys.modules):
        return False

    import torch.nn as nn
    from mmaction.registry import MODELS

    class DRN(nn.Module):
        """Stand-in for mmaction2's DRN localizer, absent from the wheel."""

        def __init__(self, *args, **kwargs):
            raise RuntimeError(
                'DRN is missing from the mmaction2 1.2.0 wheel (upstream '
                'issue open-mmlab/mmaction2#2714). Install mmaction2 from '
                'source to use it: `pip install '
                'git+https://github.com/open-mmlab/mmaction2.git@v1.2.0`.')

    package = types.ModuleType('mmaction.models.localizers.drn')
    package.__path__ = []
    package.__spec__ = importlib.machinery.ModuleSpec(
        package.__name__, None, is_package=True)
    module = types.ModuleType('mmaction.models.localizers.drn.drn')
    module.__spec__ = importlib.machinery.ModuleSpec(module.__name__, None)
    DRN.__module__ = module.__name__
    module.DRN = DRN
    package.drn = module
    sys.modules[package.__name__] = package
    sys.modules[module.__name__] = module
    MODELS.register_module(module=DRN, force=True)
    print_log(
        'mmdyt.compat: the mmaction2 wheel lacks models/localizers/drn '
        '(upstream issue 2714); installed a stand-in so that mmaction.models '
        'imports. Building DRN raises a RuntimeError.',
        logger='current')
    return True


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """The only ``getattr`` a mmengine checkpoint may call while unpickling.

    The message hub pickles ``HistoryBuffer``'s statistics methods as
    ``getattr(HistoryBuffer, 'mean')``. Allow-listing the builtin ``getattr``
    would let a checkpoint reach any attribute of any allowed object, so this
    accepts exactly those methods and nothing else.
    """
    from mmengine.logging import HistoryBuffer
    if (obj is HistoryBuffer and not name.startswith('_')
            and callable(vars(HistoryBuffer).get(name))):
        return getattr(obj, name)
    raise pickle.UnpicklingError(
        f'mmdyt.compat: refusing getattr({obj!r}, {name!r}) while loading a '
        'checkpoint with weights_only=True.')


def _pickled_as(function: Callable) -> tuple:
    """``function`` with the name pickle writes for it (numpy 1.x and 2.x
    keep their array helpers in ``numpy.core`` and ``numpy._core``)."""
    module = pickle.whichmodule(function, function.__name__)
    return function, f'{module}.{function.__name__}'


def _mmengine_checkpoint_globals() -> list:
    """Globals that mmengine checkpoints contain, besides tensors."""
    import numpy as np
    from mmengine.logging import HistoryBuffer
    dtype_classes = [
        getattr(np.dtypes, name) for name in dir(np.dtypes)
        if name.endswith('DType')
    ]
    return [
        HistoryBuffer,
        (_history_buffer_getattr, 'builtins.getattr'),
        np.ndarray,
        np.dtype,
        # the functions an array and a numpy scalar are pickled with
        _pickled_as(np.zeros(0).__reduce__()[0]),
        _pickled_as(np.float64(0).__reduce__()[0]),
        *dtype_classes,
    ]


def _mmengine_checkpoint_loads() -> bool:
    """Whether ``torch.load`` with its defaults reads a mmengine checkpoint."""
    import numpy as np
    import torch
    from mmengine.logging import HistoryBuffer
    buffer = HistoryBuffer()
    buffer.update(np.float64(1.0))
    stream = io.BytesIO()
    torch.save({'message_hub': {'log_scalars': {'loss': buffer}}}, stream)
    stream.seek(0)
    try:
        torch.load(stream)
    except Exception:  # noqa: BLE001 - any failure means the fix is needed
        return False
    return True


def fix_torch_weights_only() -> bool:
    """Allow-list the globals of mmengine checkpoints for ``weights_only``.

    Returns:
        bool: Whether the globals were allow-listed.
    """
    import torch
    if not hasattr(torch.serialization, 'add_safe_globals'):
        return False
    if _mmengine_checkpoint_loads():
        return False
    torch.serialization.add_safe_globals(_mmengine_checkpoint_globals())
    if not _mmengine_checkpoint_loads():
        raise RuntimeError(
            'mmdyt.compat: allow-listing HistoryBuffer and numpy globals did '
            'not make mmengine checkpoints loadable with this torch '
            f'({torch.__version__}); please report this.')
    print_log(
        'mmdyt.compat: torch loads with weights_only=True by default; '
        'allow-listed the HistoryBuffer/numpy globals that mmengine '
        'checkpoints contain (weights_only stays on).',
        logger='current')
    return True


def apply_all() -> List[str]:
    """Apply every fix whose problem is present, once per process.

    Returns:
        list[str]: Names of the fixes applied so far in this process.
    """
    for fix in (fix_mmcv_ext, fix_mmaction_drn, fix_torch_weights_only):
        if fix.__name__ not in APPLIED and fix():
            APPLIED.append(fix.__name__)
    return APPLIED
