"""Pre-train a demo backbone: the small ViT (timm format) or Swin (mmseg).

It stands in for a downloaded checkpoint (see demo_vit.py and demo_swin.py
beside it); the demo configs then load it frozen through ``init_cfg``. An
existing checkpoint is kept unless ``--force`` is given.

Examples::

    python tools/demo/pretrain_demo_vit.py --out data/demo/demo_vit.pth
    python tools/demo/pretrain_demo_vit.py --arch swin \\
        --out data/demo/demo_swin.pth
"""
import argparse
import os.path as osp

import mmdyt  # noqa: F401  (before mmseg: mmcv-lite's missing ops)
from demo_vit import pretrain_demo_vit

DEFAULT_OUT = dict(vit='data/demo/demo_vit.pth',
                   swin='data/demo/demo_swin.pth')


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--arch', choices=sorted(DEFAULT_OUT), default='vit',
                        help='which demo backbone (default: vit)')
    parser.add_argument('--out', help='checkpoint to write (default: '
                        'data/demo/demo_<arch>.pth)')
    parser.add_argument('--steps', type=int, default=200)
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--force', action='store_true',
                        help='retrain even if --out exists')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    out = args.out or DEFAULT_OUT[args.arch]
    if osp.exists(out) and not args.force:
        print(f'{out} exists; keeping it (use --force to retrain)')
        return
    if args.arch == 'swin':
        from demo_swin import pretrain_demo_swin as pretrain
    else:
        pretrain = pretrain_demo_vit
    pretrain(out, steps=args.steps, batch_size=args.batch_size)


if __name__ == '__main__':
    main()
