"""Frozen base weights and adapter-only checkpoints of a DyT backbone.

:class:`FrozenBackboneMixin` is the one home of what :class:`DyTViT` and
:class:`DyTSwinTransformer` share about their pre-trained (base) weights, as
mmpretrain's LoRA keeps freezing and its state-dict hooks in one class:

- freezing: every parameter but DyT's own (:func:`is_dyt_param`:
  dispatchers, adapters, relative position biases) stops training;
- adapter-only checkpoints, the PEFT pattern: with ``save_trainable_only``
  a ``state_dict`` hook leaves the frozen weights out and records them in
  the state dict's metadata, and a ``load_state_dict`` pre-hook completes
  such a state dict with the model's own frozen weights. No hook reads a
  file: the frozen weights come from ``init_weights()`` (the backbone's
  ``Pretrained`` ``init_cfg``), which training runs before resuming and
  ``tools/test.py`` runs before loading an adapter-only checkpoint
  (:meth:`FrozenBackboneMixin.load_pretrained`).

The adapter-only metadata (the backbone's entry of ``_metadata``, kept by
``torch.save`` and mmengine) holds ``trainable_only``, ``base_checkpoint`` /
``base_prefix`` (the ``init_cfg`` the frozen weights came from),
``frozen_keys`` (name -> shape), ``base_arch``, ``base_fingerprint`` (to
tell another base from the right one) and, for a ViT, ``patch_grid`` /
``num_prefix_tokens`` (to resample the base's position embedding).
"""
from collections import OrderedDict
from typing import Dict, Iterable, List

import torch.nn as nn
from mmengine.logging import print_log
from torch import Tensor

__all__ = [
    'FrozenBackboneMixin', 'DYT_PARAM_KEYWORDS', 'is_dyt_param',
    'fingerprint', 'base_fingerprint', 'fingerprints_match', 'frozen_names',
    'adapter_only_entries'
]

#: Names of the parameters that DyT adds to a pre-trained backbone
#: (dispatchers, adapters and the optional relative position biases): they
#: train.
DYT_PARAM_KEYWORDS = ('_dispatcher.', '_adapter.', 'rel_pos_bias.',
                      'attn.rel_pos_')
#: Relative tolerance of the base fingerprint (float64 sums of the same
#: float32 weights differ only by summation order).
FINGERPRINT_RTOL = 1e-6


def is_dyt_param(name: str) -> bool:
    """Whether parameter ``name`` belongs to a dispatcher, an adapter or a
    relative position bias (what DyT adds and trains)."""
    return any(key in name for key in DYT_PARAM_KEYWORDS)


def fingerprint(tensors: Iterable[Tensor]) -> List[float]:
    """``[sum |w|, sum w^2]`` over ``tensors`` in float64: a cheap signature
    of a set of weights."""
    abs_sum = sq_sum = 0.
    for tensor in tensors:
        tensor = tensor.detach().double()
        abs_sum += float(tensor.abs().sum())
        sq_sum += float(tensor.square().sum())
    return [abs_sum, sq_sum]


def base_fingerprint(weights: Dict[str, Tensor],
                     names: Iterable[str]) -> List[float]:
    """:func:`fingerprint` of the frozen weights ``names`` of ``weights``,
    without the position embedding (resampled on loading, so it may differ
    by interpolation details between library versions)."""
    return fingerprint(weights[n] for n in names if n != 'pos_embed')


def fingerprints_match(recorded: List[float], actual: List[float]) -> bool:
    """Whether two :func:`fingerprint` results agree within
    :data:`FINGERPRINT_RTOL`."""
    return all(
        abs(a - b) <= FINGERPRINT_RTOL * max(abs(a), abs(b), 1e-12)
        for a, b in zip(recorded, actual))


def frozen_names(module: nn.Module) -> List[str]:
    """Names of the parameters of ``module`` that do not train."""
    return [n for n, p in module.named_parameters() if not p.requires_grad]


def adapter_only_entries(state_dict: dict) -> Dict[str, dict]:
    """The metadata of every module saved adapter-only, by module prefix
    (``'backbone'`` for a segmentor)."""
    metadata = getattr(state_dict, '_metadata', None) or {}
    return {
        name: meta
        for name, meta in metadata.items()
        if isinstance(meta, dict) and meta.get('trainable_only')
    }


class FrozenBackboneMixin:
    """Frozen base weights and adapter-only checkpoints of a DyT backbone
    (an ``nn.Module`` with an ``init_cfg``).

    Call :meth:`_init_frozen_backbone` in the constructor, once every
    parameter exists; implement :meth:`_load_base_checkpoint` (how the
    ``Pretrained`` ``init_cfg`` is loaded) and, where the adapter-only
    metadata needs more, :meth:`_adapter_only_metadata`.
    """

    #: What the frozen network is (messages, adapter-only metadata).
    BASE_NAME = 'ViT'

    @classmethod
    def _check_frozen_args(cls, frozen: bool,
                           save_trainable_only: bool) -> None:
        """Raise a ValueError if ``save_trainable_only`` lacks ``frozen``
        (callable before the module is built)."""
        if save_trainable_only and not frozen:
            raise ValueError(
                'save_trainable_only=True needs frozen=True: with '
                f'frozen=False the {cls.BASE_NAME} weights train and must '
                'be saved')

    def _init_frozen_backbone(self, frozen: bool,
                              save_trainable_only: bool) -> None:
        """Register the adapter-only state-dict hooks and freeze the base.

        Args:
            frozen (bool): Freeze every pre-trained parameter.
            save_trainable_only (bool): Leave the frozen weights out of
                ``state_dict()`` (adapter-only checkpoints).
        """
        self._check_frozen_args(frozen, save_trainable_only)
        self.frozen = frozen
        self.save_trainable_only = save_trainable_only
        #: Whether a full set of pre-trained weights was loaded.
        self._pretrained_loaded = False
        self._register_state_dict_hook(self._strip_frozen_hook)
        self._register_load_state_dict_pre_hook(self._keep_frozen_hook)
        if frozen:
            self._freeze_pretrained()

    def _freeze_pretrained(self) -> None:
        """Freeze all but the dispatchers, adapters and relative position
        biases."""
        for name, param in self.named_parameters():
            param.requires_grad = is_dyt_param(name)

    # --------------------------------------------------- Pretrained init_cfg
    def _has_pretrained_init_cfg(self) -> bool:
        """Whether ``init_cfg`` is a ``Pretrained`` checkpoint."""
        return isinstance(self.init_cfg, dict) and \
            self.init_cfg.get('type') == 'Pretrained'

    def _load_base_checkpoint(self) -> None:
        """Load the ``Pretrained`` checkpoint of ``init_cfg``."""
        raise NotImplementedError

    def load_pretrained(self) -> bool:
        """Load the ``Pretrained`` checkpoint of ``init_cfg``, if any (the
        frozen base an adapter-only checkpoint completes itself from).

        Returns:
            bool: Whether there was one to load.
        """
        if not self._has_pretrained_init_cfg():
            return False
        self._load_base_checkpoint()
        return True

    # ------------------------------------------------ adapter-only checkpoints
    def _adapter_only_metadata(self) -> dict:
        """More adapter-only metadata of this backbone (none by default)."""
        return {}

    def _strip_frozen_hook(self, module: nn.Module, state_dict: dict,
                           prefix: str, local_metadata: dict) -> None:
        """``state_dict`` hook with ``save_trainable_only``: drop the frozen
        weights and record them in ``local_metadata``."""
        if not self.save_trainable_only:
            return
        shapes = OrderedDict()
        for name in frozen_names(self):
            tensor = state_dict.pop(prefix + name, None)
            if tensor is not None:
                shapes[name] = list(tensor.shape)
        init_cfg = self.init_cfg if isinstance(self.init_cfg, dict) else {}
        local_metadata.update(
            trainable_only=True,
            base_checkpoint=init_cfg.get('checkpoint'),
            base_prefix=init_cfg.get('prefix'),
            frozen_keys=dict(shapes),
            base_arch=self.BASE_NAME,
            base_fingerprint=base_fingerprint(
                dict(self.named_parameters()), shapes))
        local_metadata.update(self._adapter_only_metadata())

    def _keep_frozen_hook(self, state_dict: dict, prefix: str,
                          local_metadata: dict, *args, **kwargs) -> None:
        """``load_state_dict`` pre-hook: complete an adapter-only state dict
        with the model's own frozen weights.

        An adapter-only state dict is one marked ``trainable_only`` in its
        metadata, or (metadata lost) one with DyT parameters and none of the
        pre-trained weights. Its missing frozen weights are the model's,
        which must hold the base the adapters were trained on:
        ``init_weights()`` loads it from the ``Pretrained`` ``init_cfg``.
        Other state dicts pass unchanged (a full load marks the model as
        holding its weights, ``_pretrained_loaded``).

        Args:
            state_dict (dict): The state dict being loaded (modified in
                place).
            prefix (str): The module's prefix in ``state_dict``.
            local_metadata (dict): The module's metadata in ``state_dict``.

        Raises:
            ValueError: If the frozen weights are needed but the model holds
                none yet, or holds another base than the adapters were
                trained on.
        """
        params = dict(self.named_parameters())
        pretrained = [n for n in params if not is_dyt_param(n)]
        present = [n for n in params if prefix + n in state_dict]
        if all(n in present for n in pretrained):
            self._pretrained_loaded = True  # a full load
            return
        recorded = local_metadata.get('frozen_keys')
        if local_metadata.get('trainable_only') and recorded is not None:
            missing = [n for n in recorded if prefix + n not in state_dict]
        elif any(is_dyt_param(n) for n in present) and not any(
                n in present for n in pretrained):
            missing = pretrained  # adapter-only, metadata lost
        else:
            return  # an ordinary partial state dict: the loader reports it
        if not missing:
            return
        base = local_metadata.get('base_checkpoint')
        kind, cls = self.BASE_NAME, type(self).__name__
        if not self._pretrained_loaded:
            raise ValueError(
                f'this is an adapter-only checkpoint: its {len(missing)} '
                f'frozen {kind} weights come from the base checkpoint '
                f'{base!r}, but this {cls} does not hold them yet. ' +
                ('Call init_weights() on the model (it loads init_cfg\'s '
                 'checkpoint) before loading the adapters (tools/test.py '
                 'does), ' if self._has_pretrained_init_cfg() else
                 "Give the backbone init_cfg=dict(type='Pretrained', "
                 'checkpoint=BASE) and call init_weights() before loading, ')
                + 'or merge base and adapters into one checkpoint with '
                'tools/model_converters/merge_adapter_checkpoint.py.')
        unknown = [n for n in (recorded or missing) if n not in params]
        if unknown:
            raise ValueError(
                f'the adapter-only checkpoint left out weights this {cls} '
                f'does not have: {unknown[:5]} (another architecture?)')
        recorded_fp = local_metadata.get('base_fingerprint')
        if recorded_fp is not None and not fingerprints_match(
                recorded_fp, base_fingerprint(params, recorded or missing)):
            current = (self.init_cfg or {}).get('checkpoint') if isinstance(
                self.init_cfg, dict) else None
            raise ValueError(
                'the adapter-only checkpoint was trained on other frozen '
                f'{kind} weights than this model has: base checkpoint '
                f'{base!r} when saved, {current!r} (init_cfg) now, and the '
                'weights differ (fingerprint). Load the base the adapters '
                'were trained with.')
        for name in missing:
            state_dict[prefix + name] = params[name].detach()
        print_log(
            f'Adapter-only checkpoint: {len(missing)} frozen {kind} weights '
            f'taken from the base checkpoint ({base or "init_cfg"}).',
            logger='current')
