"""Generate the demo datasets in the real layouts (no download needed).

- ``seg``: an ADE20K-style folder ``OUT/seg/{images,annotations}/{training,
  validation}`` of shapes on textured backgrounds;
- ``video``: ``OUT/video/`` mp4 clips in which two shapes cross the frame one
  after the other, the class being the pair (so one frame is not enough),
  with mmaction2 ``path label`` list files (``tools/demo/video_demo_data.py``);
- ``det``: a COCO-style folder ``OUT/det/{train2017,val2017,annotations}`` of
  the same shapes as instances with masks (``tools/demo/det_demo_data.py``).

Repeating a call keeps complete splits, so it costs nothing.

Example::

    python tools/demo/make_demo_data.py --task all --out data/demo
"""
import argparse
import os.path as osp

import mmdyt  # noqa: F401


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--task',
        choices=['seg', 'video', 'det', 'all'],
        default='all',
        help='which dataset to write')
    parser.add_argument('--out', default='data/demo', help='output root')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.task in ('seg', 'all'):
        from seg_demo_data import make_seg_demo
        root = osp.join(args.out, 'seg')
        counts = make_seg_demo(root, seed=args.seed)
        print(f'segmentation demo data in {root}: {counts}')
    if args.task in ('video', 'all'):
        from video_demo_data import make_video_demo
        root = osp.join(args.out, 'video')
        counts = make_video_demo(root, seed=args.seed)
        print(f'video demo data in {root}: {counts}')
    if args.task in ('det', 'all'):
        from det_demo_data import make_det_demo
        root = osp.join(args.out, 'det')
        counts = make_det_demo(root, seed=args.seed)
        print(f'detection demo data in {root}: {counts}')


if __name__ == '__main__':
    main()
