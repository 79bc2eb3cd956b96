"""Merge an adapter-only checkpoint and its base ViT into a full checkpoint.

Checkpoints of a model with ``save_trainable_only=True`` hold only what
trains (adapters, dispatchers, neck, heads) and the name of the base
checkpoint; this writes the full checkpoint, which loads anywhere without the
base (e.g. for deployment). Examples::

    python tools/merge_adapter_checkpoint.py work_dirs/x/iter_160000.pth \\
        full.pth
    python tools/merge_adapter_checkpoint.py ADAPTERS.pth full.pth \\
        --base pretrain/vit_base_patch16_224_in21k.pth   # base moved
"""
import argparse

import mmdyt  # noqa: F401  (compat fixes)
from mmdyt.utils.adapter_checkpoint import merge_adapter_checkpoint


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('adapter', help='adapter-only checkpoint')
    parser.add_argument('out', help='full checkpoint to write')
    parser.add_argument(
        '--base',
        help='base ViT checkpoint (timm format); defaults to the one '
        'recorded in the adapter-only checkpoint')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    counts = merge_adapter_checkpoint(args.adapter, args.out, base=args.base)
    print(f'wrote {args.out}: {counts["trainable"]} tensors of '
          f'{args.adapter} + {counts["frozen"]} frozen ViT weights of the '
          'base')


if __name__ == '__main__':
    main()
