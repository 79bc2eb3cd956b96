"""Registration of mmdyt's modules in the OpenMMLab libraries it extends.

mmdyt has no registry of its own: each module is registered directly in the
registries of the libraries it plugs into (mmseg, mmaction2, mmdet), so that
``type='DyTViT'`` works in any existing config of those libraries (with
``custom_imports=dict(imports=['mmdyt'])`` or after ``import mmdyt``).

One idiom serves every kind of module::

    @register('MODELS')                      # in every library
    class DyTViT(BaseModule): ...

    @register('MODELS', scopes=('mmseg', ))  # in one library only
    class DyTEncoderDecoder(EncoderDecoder): ...

Adding a library is one entry of :data:`LIBRARIES`.
"""
import importlib
from typing import Callable, Dict, Optional, Sequence, Type

import torch.nn as nn
from mmengine.registry import DefaultScope, Registry

#: Libraries mmdyt plugs into: scope name -> module holding its registries.
LIBRARIES: Dict[str, str] = {
    'mmseg': 'mmseg.registry',
    'mmaction': 'mmaction.registry',
    'mmdet': 'mmdet.registry',
}

#: Registry kinds mmdyt registers into (names of the libraries' registries).
KINDS = ('MODELS', 'HOOKS', 'TRANSFORMS', 'OPTIM_WRAPPERS')


def library_registry(scope: str, kind: str) -> Registry:
    """The registry ``kind`` (e.g. ``'MODELS'``) of the library ``scope``.

    Raises:
        ValueError: If ``scope`` or ``kind`` is not one mmdyt knows.
    """
    if scope not in LIBRARIES:
        raise ValueError(f'unknown scope {scope!r}; mmdyt plugs into '
                         f'{sorted(LIBRARIES)}')
    if kind not in KINDS:
        raise ValueError(f'unknown registry kind {kind!r}; one of {KINDS}')
    return getattr(importlib.import_module(LIBRARIES[scope]), kind)


def register(kind: str,
             scopes: Optional[Sequence[str]] = None
             ) -> Callable[[Type], Type]:
    """Class decorator registering a class in the ``kind`` registry of each
    library in ``scopes``.

    Args:
        kind (str): One of :data:`KINDS`.
        scopes (Sequence[str], optional): Libraries to register in, keys of
            :data:`LIBRARIES`. Defaults to all of them.
    """
    scopes = tuple(LIBRARIES) if scopes is None else tuple(scopes)
    registries = [library_registry(scope, kind) for scope in scopes]

    def decorator(cls: Type) -> Type:
        for registry in registries:
            registry.register_module(module=cls)
        return cls

    return decorator


def current_scope(default: str = 'mmseg') -> str:
    """The default scope if it is a library mmdyt plugs into, else
    ``default`` (never mmengine's root scope, which a Runner of another
    library may have made the current one)."""
    current = DefaultScope.get_current_instance()
    scope = current.scope_name if current is not None else None
    return scope if scope in LIBRARIES else default


def build_model(cfg: dict) -> nn.Module:
    """Build a model component from ``cfg`` in the current library's
    ``MODELS`` (see :func:`current_scope`); mmdyt's shared modules are in
    every library's registry.

    Args:
        cfg (dict): The config, with ``type``; an explicit ``_scope_`` wins.
    """
    cfg = dict(cfg)
    scope = cfg.setdefault('_scope_', current_scope())
    return library_registry(scope, 'MODELS').build(cfg)
