"""Registration of mmdyt's modules in the OpenMMLab libraries it extends.

mmdyt has no registry of its own: its modules are registered directly in
mmseg's and mmaction2's registries, so that ``type='DyTViT'`` works in any
existing config of either library (with ``custom_imports=dict(imports=
['mmdyt'])`` or after ``import mmdyt``).
"""
from typing import Callable, Sequence, Type

import torch.nn as nn
from mmengine.registry import DefaultScope
from mmaction.registry import HOOKS as MMACTION_HOOKS
from mmaction.registry import MODELS as MMACTION_MODELS
from mmseg.registry import HOOKS as MMSEG_HOOKS
from mmseg.registry import MODELS as MMSEG_MODELS

_REGISTRIES = {
    'model': {'mmseg': MMSEG_MODELS, 'mmaction': MMACTION_MODELS},
    'hook': {'mmseg': MMSEG_HOOKS, 'mmaction': MMACTION_HOOKS},
}


def build_model(cfg: dict) -> nn.Module:
    """Build a model component from ``cfg`` in the current library's registry.

    With ``default_scope`` ``'mmaction'`` mmaction2's registry is used, else
    mmseg's (never mmengine's root registry, which a Runner of another scope
    may have made the default). Shared mmdyt modules are in both.
    """
    current = DefaultScope.get_current_instance()
    scope = current.scope_name if current is not None else None
    cfg = dict(cfg)
    cfg.setdefault('_scope_', scope if scope in _REGISTRIES['model'] else
                   'mmseg')
    return _REGISTRIES['model'][cfg['_scope_']].build(cfg)


def _register(kind: str, scopes: Sequence[str]) -> Callable[[Type], Type]:
    unknown = set(scopes) - set(_REGISTRIES[kind])
    if unknown:
        raise ValueError(f'unknown scopes {sorted(unknown)}; expected a '
                         f'subset of {sorted(_REGISTRIES[kind])}')

    def decorator(cls: Type) -> Type:
        for scope in scopes:
            _REGISTRIES[kind][scope].register_module(module=cls)
        return cls

    return decorator


def register_model(scopes: Sequence[str] = ('mmseg', 'mmaction')
                   ) -> Callable[[Type], Type]:
    """Class decorator registering a model in mmseg's and/or mmaction2's
    ``MODELS``.

    Args:
        scopes (Sequence[str]): Libraries to register in, a subset of
            ``('mmseg', 'mmaction')``. Defaults to both.
    """
    return _register('model', scopes)


def register_hook(scopes: Sequence[str] = ('mmseg', 'mmaction')
                  ) -> Callable[[Type], Type]:
    """Class decorator registering a hook in mmseg's and/or mmaction2's
    ``HOOKS``.

    Args:
        scopes (Sequence[str]): Libraries to register in. Defaults to both.
    """
    return _register('hook', scopes)
