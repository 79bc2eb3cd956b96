"""Show which tokens each DyT block computed, on an image or a video.

Writes to ``--out``:

- ``<name>_dispatch.png`` (images) or ``<name>_frame<t>_dispatch.png`` (one
  per video frame): a panel per dispatcher site with the skipped tokens
  dimmed, and a last panel colouring every token by the number of sites
  that computed it;
- ``<name>_rates.png``: the activation rate of every site (for a clip, the
  mean over its frames, with the per-frame range as error bars);
- ``<name>_rates.json``: the same numbers.

Segmentation configs (mmseg) read an image through the config's test
pipeline and data preprocessor; video configs (mmaction2) take
``--num-frames`` frames evenly from a video file or a folder of frames,
resize and centre-crop them to the backbone's size and normalise them with
the data preprocessor. The backbone runs once, in eval mode, on the whole
input (inputs are zero-padded to a multiple of the patch size).

Examples::

    python tools/analysis_tools/visualize_dispatch.py \\
        configs/demo/seg_demo.py work_dirs/seg_demo/iter_600.pth \\
        data/demo/seg/images/validation/demo_validation_00000.jpg --out vis/
    python tools/analysis_tools/visualize_dispatch.py VIDEO_CONFIG CKPT \\
        clip.mp4 --out vis/
"""
import argparse
import json
import os
import os.path as osp
from typing import List, Optional

import cv2
import numpy as np
import torch
from mmengine.config import DictAction

import mmdyt  # noqa: F401  (compat fixes, registration)
from dispatch_vis import (frame_rates, mask_to_grid, plot_rates,
                          render_dispatch_grid)
from mmdyt.engine import find_dyt_backbone
from model_inputs import (VIDEO_EXTENSIONS, clip_inputs, clip_len_of,
                          image_inputs, init_task_model, load_config,
                          pad_to_patches, read_frames)

#: Frames per clip when neither --num-frames nor the config says.
DEFAULT_NUM_FRAMES = 8


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='model config (mmseg or mmaction2)')
    parser.add_argument('checkpoint', help='trained model checkpoint')
    parser.add_argument(
        'input', help='an image, a video file or a folder of video frames')
    parser.add_argument('--out', required=True, help='output directory')
    parser.add_argument(
        '--num-frames',
        type=int,
        help='frames of a video (default: the test pipeline\'s clip_len, '
        f'else {DEFAULT_NUM_FRAMES})')
    parser.add_argument(
        '--shape',
        type=int,
        nargs=2,
        metavar=('H', 'W'),
        help="frame size of a video (default: the backbone's img_size)")
    parser.add_argument(
        '--cols', type=int, default=4, help='panels per row (default: 4)')
    parser.add_argument(
        '--dispatch-threshold',
        type=float,
        help='evaluation threshold of the dispatchers (default: the '
        "config's)")
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings')
    args = parser.parse_args(argv)
    if args.cols < 1:
        parser.error('--cols must be >= 1')
    return args


def is_video(path: str) -> bool:
    """Whether ``path`` is a video file or a frame folder."""
    return osp.isdir(path) or path.lower().endswith(VIDEO_EXTENSIONS)


def load_inputs(model, backbone, args):
    """Backbone input and the RGB images (one per frame) it shows."""
    if not osp.exists(args.input):
        raise FileNotFoundError(f'{args.input} does not exist')
    if model.cfg.default_scope == 'mmaction':
        frames = args.num_frames or clip_len_of(
            model.cfg) or DEFAULT_NUM_FRAMES
        if is_video(args.input):
            raw = read_frames(args.input, frames)
        else:  # one image: a clip of one frame
            import mmcv
            raw = [mmcv.imread(args.input, channel_order='rgb')]
        size = tuple(args.shape) if args.shape else backbone.img_size
        inputs, images = clip_inputs(model, raw, size)
    else:
        if is_video(args.input):
            raise ValueError(
                f'{args.input}: a segmentation config ({model.cfg.filename}) '
                'takes images; give an image file')
        inputs, image = image_inputs(model, args.input)
        images = [image]
    return pad_to_patches(inputs, images, backbone.patch_size)


def main(argv: Optional[List[str]] = None) -> List[str]:
    """Run the tool; returns the written files (also for tests)."""
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint {args.checkpoint} does not exist')
    model = init_task_model(cfg, args.checkpoint)
    backbone = find_dyt_backbone(model)
    if backbone is None or not backbone.dispatch_sites:
        raise ValueError(f'{args.config}: the model has no DyT token '
                         'dispatchers, so there is nothing to show')
    if args.dispatch_threshold is not None:
        backbone.set_dispatch_threshold(args.dispatch_threshold)
    inputs, images = load_inputs(model, backbone, args)
    with torch.no_grad():
        backbone(inputs)
    sites = backbone.dispatch_sites
    masks = [m.cpu().numpy() for m in backbone.dispatch_masks]
    grid = (inputs.shape[-2] // backbone.patch_size,
            inputs.shape[-1] // backbone.patch_size)

    os.makedirs(args.out, exist_ok=True)
    name = osp.splitext(osp.basename(osp.normpath(args.input)))[0]
    video = inputs.dim() == 5
    written = []
    for t, image in enumerate(images):
        grids = [mask_to_grid(m[t], grid) for m in masks]
        canvas = render_dispatch_grid(image, grids, sites, args.cols)
        stem = f'{name}_frame{t:03d}' if video else name
        path = osp.join(args.out, f'{stem}_dispatch.png')
        cv2.imwrite(path, canvas[..., ::-1])
        written.append(path)

    per_frame = frame_rates(masks)  # per site, a rate per frame
    rates = [float(np.mean(r)) for r in per_frame]
    spread = ([min(r) for r in per_frame],
              [max(r) for r in per_frame]) if video else None
    title = (f'{name}: {len(images)} frames, ' if video else f'{name}: ') + \
        f'mean rate {np.mean(rates):.3f}'
    plot_path = osp.join(args.out, f'{name}_rates.png')
    plot_rates(plot_path, sites, rates, spread, title)
    json_path = osp.join(args.out, f'{name}_rates.json')
    with open(json_path, 'w') as file:
        json.dump(
            dict(
                input=args.input,
                input_shape=list(inputs.shape[1:]),
                sites=[list(s) for s in sites],
                rates=rates,
                frame_rates=per_frame), file, indent=2)
    written += [plot_path, json_path]
    print(f'mean activation rate {np.mean(rates):.3f} over {len(sites)} '
          f'dispatchers; wrote {len(written)} files to {args.out}')
    return written


if __name__ == '__main__':
    main()
