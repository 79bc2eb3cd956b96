"""Adapter-only checkpoints: the trained weights and the name of the base ViT.

A frozen ViT-B is 86M parameters that every checkpoint of a DyT run would
repeat unchanged. With ``DyTViT(save_trainable_only=True)`` the backbone's
``state_dict`` leaves its frozen weights out (the mmpretrain LoRA pattern: a
``state_dict`` hook, no special saver), so that mmengine's CheckpointHook
writes adapter-only checkpoints: adapters, dispatchers, neck and heads.

The backbone's entry in the state dict's ``_metadata`` (saved by
``torch.save`` and kept by mmengine) records what was left out:

- ``trainable_only``: True;
- ``base_checkpoint`` / ``base_prefix``: the ``init_cfg`` Pretrained
  checkpoint the frozen weights came from;
- ``frozen_keys``: name -> shape of every weight left out;
- ``patch_grid`` / ``num_prefix_tokens``: to resample the base's position
  embedding as the model did;
- ``base_fingerprint``: sums of the frozen weights (but the position
  embedding), to tell another base from the right one.

Loading (``--resume``, ``tools/test.py``, ``load_checkpoint``) goes through a
``load_state_dict`` pre-hook: when the weights left out are missing, it fills
them from the model's own frozen weights, loading the backbone's ``init_cfg``
checkpoint first if the model was not initialised from it, and checks the
fingerprint. :func:`merge_adapter_checkpoint` writes a full checkpoint.
"""
import os.path as osp
from collections import OrderedDict
from typing import Dict, Iterable, List, Optional

import torch
import torch.nn as nn
from mmengine.logging import print_log
from timm.layers import resample_abs_pos_embed
from torch import Tensor

#: Relative tolerance of the base fingerprint (float64 sums of the same
#: float32 weights differ only by summation order).
FINGERPRINT_RTOL = 1e-6


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


def full_state_dict(module: nn.Module) -> dict:
    """``module.state_dict()`` with the frozen weights, whatever
    ``save_trainable_only`` says."""
    flag = getattr(module, 'save_trainable_only', False)
    module.save_trainable_only = False
    try:
        return module.state_dict()
    finally:
        module.save_trainable_only = flag


def strip_frozen_weights(module: nn.Module, state_dict: dict, prefix: str,
                         local_metadata: dict) -> None:
    """``state_dict`` hook of a DyTViT with ``save_trainable_only``: drop the
    frozen weights and record them in ``local_metadata``."""
    if not getattr(module, 'save_trainable_only', False):
        return
    names = frozen_names(module)
    shapes = OrderedDict()
    for name in names:
        tensor = state_dict.pop(prefix + name, None)
        if tensor is not None:
            shapes[name] = list(tensor.shape)
    params = dict(module.named_parameters())
    init_cfg = module.init_cfg if isinstance(module.init_cfg, dict) else {}
    local_metadata.update(
        trainable_only=True,
        base_checkpoint=init_cfg.get('checkpoint'),
        base_prefix=init_cfg.get('prefix'),
        frozen_keys=dict(shapes),
        patch_grid=list(module.patch_grid),
        num_prefix_tokens=module.num_prefix_tokens,
        base_fingerprint=base_fingerprint(params, shapes))


def restore_frozen_weights(module: nn.Module, state_dict: dict, prefix: str,
                           local_metadata: dict,
                           is_trainable_name) -> None:
    """``load_state_dict`` pre-hook of a DyTViT: complete an adapter-only
    state dict with the frozen weights of the base checkpoint.

    An adapter-only state dict is one marked ``trainable_only`` in its
    metadata, or (metadata lost) one with DyT parameters and none of the
    pre-trained weights. Its missing frozen weights are taken from the
    model, after loading the backbone's ``init_cfg`` checkpoint into it if
    no full set of pre-trained weights was loaded before. Other state dicts
    pass unchanged (a full load marks the model as initialised).

    Args:
        module (nn.Module): The DyTViT.
        state_dict (dict): The state dict being loaded (modified in place).
        prefix (str): The module's prefix in ``state_dict``.
        local_metadata (dict): The module's metadata in ``state_dict``.
        is_trainable_name (Callable[[str], bool]): Whether a parameter name
            is a DyT (adapter or dispatcher) parameter.

    Raises:
        ValueError: If the frozen weights are needed but the model has no
            Pretrained ``init_cfg``, or if the base checkpoint differs from
            the one the adapters were trained on.
    """
    names = [n for n, _ in module.named_parameters()]
    pretrained = [n for n in names if not is_trainable_name(n)]
    present = [n for n in names if prefix + n in state_dict]
    if all(n in present for n in pretrained):
        module._pretrained_loaded = True  # a full load
        return
    recorded = local_metadata.get('frozen_keys')
    if local_metadata.get('trainable_only') and recorded is not None:
        missing = [n for n in recorded if prefix + n not in state_dict]
    elif any(is_trainable_name(n) for n in present) and not any(
            n in present for n in pretrained):
        missing = pretrained  # adapter-only, metadata lost
    else:
        return  # an ordinary partial state dict: the loader reports it
    if not missing:
        return
    base = local_metadata.get('base_checkpoint')
    if not module._pretrained_loaded:
        if not module.load_pretrained():
            raise ValueError(
                f'this is an adapter-only checkpoint: its {len(missing)} '
                'frozen ViT weights come from the base checkpoint '
                f'{base!r}, but this DyTViT has no '
                "init_cfg=dict(type='Pretrained', checkpoint=...) to read "
                'them from. Set it (e.g. --cfg-options '
                'model.backbone.init_cfg.checkpoint=BASE) or merge base and '
                'adapters with tools/merge_adapter_checkpoint.py.')
    params = dict(module.named_parameters())
    unknown = [n for n in (recorded or missing) if n not in params]
    if unknown:
        raise ValueError(
            f'the adapter-only checkpoint left out weights this DyTViT does '
            f'not have: {unknown[:5]} (another architecture?)')
    recorded_fp = local_metadata.get('base_fingerprint')
    if recorded_fp is not None and not fingerprints_match(
            recorded_fp, base_fingerprint(params, recorded or missing)):
        current = (module.init_cfg or {}).get('checkpoint') if isinstance(
            module.init_cfg, dict) else None
        raise ValueError(
            'the adapter-only checkpoint was trained on other frozen ViT '
            f'weights than this model has: base checkpoint {base!r} when '
            f'saved, {current!r} (init_cfg) now, and the weights differ '
            '(fingerprint). Load the base the adapters were trained with.')
    for name in missing:
        state_dict[prefix + name] = params[name].detach()
    print_log(
        f'Adapter-only checkpoint: {len(missing)} frozen ViT weights taken '
        f'from the base checkpoint ({base or "init_cfg"}).',
        logger='current')


def adapter_only_entries(state_dict: dict) -> Dict[str, dict]:
    """The metadata of every module saved adapter-only, by module prefix
    (``'backbone'`` for a segmentor)."""
    metadata = getattr(state_dict, '_metadata', None) or {}
    return {
        name: meta
        for name, meta in metadata.items()
        if isinstance(meta, dict) and meta.get('trainable_only')
    }


def merge_adapter_checkpoint(adapter: str,
                             out: str,
                             base: Optional[str] = None) -> Dict[str, int]:
    """Write a full checkpoint: an adapter-only checkpoint plus its base.

    The result loads without the base checkpoint, e.g. into a model without
    ``init_cfg``. Everything else in the checkpoint (meta, optimizer,
    message hub) is kept.

    Args:
        adapter (str): The adapter-only checkpoint.
        out (str): Where to write the full checkpoint.
        base (str, optional): The base ViT checkpoint (timm format); defaults
            to the one recorded in the adapter-only checkpoint.

    Returns:
        dict: Number of ``trainable`` tensors in the adapter-only checkpoint
        and ``frozen`` tensors added from the base.

    Raises:
        ValueError: If the checkpoint is not adapter-only, or the base lacks
            weights, has other shapes or is not the base the adapters were
            trained on.
    """
    from .checkpoint import read_checkpoint, read_state_dict
    checkpoint = read_checkpoint(adapter)
    state_dict = checkpoint.get('state_dict', checkpoint)
    entries = adapter_only_entries(state_dict)
    if not entries:
        raise ValueError(
            f'{adapter} is not an adapter-only checkpoint (no module of its '
            'state dict was saved with save_trainable_only=True)')
    counts = dict(trainable=len(state_dict), frozen=0)
    for module_name, meta in entries.items():
        base_path = base or meta.get('base_checkpoint')
        if not base_path:
            raise ValueError(
                f'{adapter} does not record its base checkpoint; pass --base')
        if not osp.isfile(base_path):
            raise FileNotFoundError(
                f'base checkpoint {base_path} (recorded in {adapter}) does '
                'not exist; pass --base')
        weights = read_state_dict(base_path)
        base_prefix = meta.get('base_prefix') or ''
        if base_prefix:
            weights = {
                k[len(base_prefix):]: v
                for k, v in weights.items() if k.startswith(base_prefix)
            }
        prefix = f'{module_name}.' if module_name else ''
        merged, problems = {}, []
        for name, shape in meta['frozen_keys'].items():
            if name not in weights:
                problems.append(f'{name}: missing')
                continue
            tensor = weights[name]
            if name == 'pos_embed' and list(tensor.shape) != shape:
                tensor = _resample_pos_embed(tensor, meta)
            if list(tensor.shape) != shape:
                problems.append(f'{name}: {list(tensor.shape)} vs {shape}')
                continue
            merged[prefix + name] = tensor
        if problems:
            raise ValueError(
                f'base checkpoint {base_path} does not fit the adapters of '
                f'{adapter}: ' + '; '.join(problems[:5]))
        recorded = meta.get('base_fingerprint')
        if recorded is not None and not fingerprints_match(
                recorded,
                base_fingerprint(
                    {k[len(prefix):]: v for k, v in merged.items()},
                    meta['frozen_keys'])):
            raise ValueError(
                f'base checkpoint {base_path} is not the ViT the adapters of '
                f'{adapter} were trained on (the weights differ)')
        state_dict.update(merged)
        counts['frozen'] += len(merged)
        meta['trainable_only'] = False
        meta['merged_base_checkpoint'] = base_path
    torch.save(checkpoint, out)
    return counts


def _resample_pos_embed(pos_embed: Tensor, meta: dict) -> Tensor:
    """Resample a base position embedding as DyTViT's load hook does."""
    prefix_tokens = meta['num_prefix_tokens']
    side = int(round((pos_embed.shape[1] - prefix_tokens)**0.5))
    return resample_abs_pos_embed(
        pos_embed,
        new_size=tuple(meta['patch_grid']),
        old_size=(side, side),
        num_prefix_tokens=prefix_tokens)
