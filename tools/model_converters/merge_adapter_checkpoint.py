"""Merge an adapter-only checkpoint and its base into a full checkpoint.

Checkpoints of a model with ``save_trainable_only=True`` hold only what
trains (adapters, dispatchers, neck, heads) and the name of the base
checkpoint; this writes the full checkpoint, which loads anywhere without the
base (e.g. for deployment). The base is the checkpoint the backbone's
``init_cfg`` loaded: a timm-format ViT for ``DyTViT``, an mmseg-format Swin
(a whole mmseg model's ``backbone.*`` too) for ``DyTSwinTransformer``.
Examples::

    python tools/model_converters/merge_adapter_checkpoint.py \\
        work_dirs/x/iter_160000.pth full.pth
    python tools/model_converters/merge_adapter_checkpoint.py \\
        ADAPTERS.pth full.pth \\
        --base pretrain/vit_base_patch16_224_in21k.pth   # base moved
"""
import argparse
import os.path as osp
from typing import Dict, Optional

import torch

import mmdyt  # noqa: F401  (compat fixes)
from mmdyt.models.backbones.checkpoint_layouts import (strip_backbone_prefix,
                                                       with_prefix_removed)
from mmdyt.models.backbones.checkpoint_loading import (read_checkpoint,
                                                       read_state_dict)
from mmdyt.models.backbones.frozen_backbone import (adapter_only_entries,
                                                    base_fingerprint,
                                                    fingerprints_match)
from mmdyt.models.layers.pos_embed import resample_pos_embed


def base_weights(path: str, meta: dict) -> dict:
    """The base checkpoint's weights under the names the backbone loaded
    them with: ``init_cfg``'s ``prefix`` removed; for a Swin also the
    ``backbone.`` of a whole mmseg model, as mmseg's Swin loader does."""
    weights = read_state_dict(path)
    base_prefix = meta.get('base_prefix') or ''
    if base_prefix:
        return with_prefix_removed(weights, base_prefix)
    if meta.get('base_arch') == 'Swin':
        weights, _ = strip_backbone_prefix(weights)
    return weights


def layout_hint(meta: dict, weights: dict) -> str:
    """Advice when the base's names do not fit the adapters' model."""
    if meta.get('base_arch') == 'Swin' and any(
            k.startswith('layers.') for k in weights):
        return (' (an official / timm Swin checkpoint: convert it with '
                "mmseg's tools/model_converters/swin2mmseg.py first, as the "
                'training did)')
    return ''


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
        base (str, optional): The base checkpoint (a timm-format ViT or an
            mmseg-format Swin); defaults to the one recorded in the
            adapter-only checkpoint.

    Returns:
        dict: Number of ``trainable`` tensors in the adapter-only checkpoint
        and ``frozen`` tensors added from the base.

    Raises:
        ValueError: If the checkpoint is not adapter-only, or the base lacks
            weights, has other shapes or is not the base the adapters were
            trained on.
    """
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
        weights = base_weights(base_path, meta)
        prefix = f'{module_name}.' if module_name else ''
        merged, problems = {}, []
        for name, shape in meta['frozen_keys'].items():
            if name not in weights:
                problems.append(f'{name}: missing')
                continue
            tensor = weights[name]
            if name == 'pos_embed' and list(tensor.shape) != shape:
                # as DyTViT's load hook does
                tensor = resample_pos_embed(tensor,
                                            tuple(meta['patch_grid']),
                                            meta['num_prefix_tokens'])
            if list(tensor.shape) != shape:
                problems.append(f'{name}: {list(tensor.shape)} vs {shape}')
                continue
            merged[prefix + name] = tensor
        if problems:
            raise ValueError(
                f'base checkpoint {base_path} does not fit the adapters of '
                f'{adapter}: ' + '; '.join(problems[:5]) +
                layout_hint(meta, weights))
        recorded = meta.get('base_fingerprint')
        if recorded is not None and not fingerprints_match(
                recorded,
                base_fingerprint(
                    {k[len(prefix):]: v for k, v in merged.items()},
                    meta['frozen_keys'])):
            raise ValueError(
                f'base checkpoint {base_path} is not the '
                f'{meta.get("base_arch", "ViT")} the adapters of {adapter} '
                'were trained on (the weights differ)')
        state_dict.update(merged)
        counts['frozen'] += len(merged)
        meta['trainable_only'] = False
        meta['merged_base_checkpoint'] = base_path
    torch.save(checkpoint, out)
    return counts


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('adapter', help='adapter-only checkpoint')
    parser.add_argument('out', help='full checkpoint to write')
    parser.add_argument(
        '--base',
        help='base checkpoint (a timm-format ViT, an mmseg-format Swin); '
        'defaults to the one recorded in the adapter-only checkpoint')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    counts = merge_adapter_checkpoint(args.adapter, args.out, base=args.base)
    print(f'wrote {args.out}: {counts["trainable"]} tensors of '
          f'{args.adapter} + {counts["frozen"]} frozen weights of the base')


if __name__ == '__main__':
    main()
