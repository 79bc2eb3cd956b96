"""Pre-train the demos' small ViT and save it in timm's format.

It stands in for a downloaded checkpoint (see demo_vit.py beside it); the
demo configs then load it frozen through ``init_cfg``. An existing checkpoint
is kept unless ``--force`` is given.

Example::

    python tools/demo/pretrain_demo_vit.py --out data/demo/demo_vit.pth
"""
import argparse
import os.path as osp

import mmdyt  # noqa: F401
from demo_vit import pretrain_demo_vit


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default='data/demo/demo_vit.pth')
    parser.add_argument('--steps', type=int, default=200)
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--force', action='store_true',
                        help='retrain even if --out exists')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if osp.exists(args.out) and not args.force:
        print(f'{args.out} exists; keeping it (use --force to retrain)')
        return
    pretrain_demo_vit(args.out, steps=args.steps, batch_size=args.batch_size)


if __name__ == '__main__':
    main()
