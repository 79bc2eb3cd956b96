"""Show which tokens each DyT block computed, on an image or a video.

Writes to ``--out``:

- ``<name>_dispatch.png`` (images) or ``<name>_frame<t>_dispatch.png`` (one
  per video frame): a panel per dispatcher site with the skipped tokens
  dimmed, and a last panel colouring every token by the number of sites
  that computed it;
- ``<name>_rates.png``: the activation rate of every site (for a clip, the
  mean over its frames, with the per-frame range as error bars);
- ``<name>_rates.json``: the same numbers.

The masks come from the model's own prediction, as any user gets them
(DyT's data samples carry ``dispatch_masks`` on request). Segmentation
configs (mmseg) predict with ``mmseg.apis.inference_model``: the config's
test pipeline and test mode (a sliding-window test shows, per pixel, the
share of the crops over it that computed it). Video configs (mmaction2)
take ``--num-frames`` frames evenly from a video file or a folder of
frames, resize and centre-crop them to the backbone's size and predict the
clip (one view).

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
from typing import List, Optional, Tuple

import cv2
import numpy as np
import torch
from mmengine.config import DictAction

import mmdyt  # noqa: F401  (compat fixes, registration)
from mmdyt.engine import find_dyt_backbone
from mmdyt.models.dispatch_record import predict_with_dispatch
from mmdyt_tools.dispatch_plots import (frame_rates, mask_to_grid,
                                        plot_rates, render_dispatch_grid)
from mmdyt_tools.inputs import (DEFAULT_NUM_FRAMES, VIDEO_EXTENSIONS,
                                clip_inputs, clip_len_of, init_task_model,
                                load_config, pad_to_patches, read_frames)


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


def predicted_with_masks(model, backbone, predict) -> list:
    """``predict()``'s data samples with their ``dispatch_masks``: DyT's
    task models record them themselves when asked
    (``return_dispatch_masks``); around any other task model with a DyTViT
    (e.g. mmseg's ``EncoderDecoder``) :func:`predict_with_dispatch` does."""
    if hasattr(model, 'return_dispatch_masks'):
        model.return_dispatch_masks = True
        return predict()
    return predict_with_dispatch(backbone, predict, return_masks=True)


def image_dispatch(model, backbone,
                   path: str) -> Tuple[np.ndarray, list, tuple]:
    """An image through mmseg's ``inference_model`` (the config's test
    pipeline and test mode): the RGB image the backbone saw and, per site,
    its dispatch map.

    The masks come from the prediction's data sample (see
    :func:`predicted_with_masks`). A whole-image test gives
    one mask per site on the patch grid; a sliding-window test one per
    crop, shown as the fraction of the crops covering each pixel that
    computed it.

    Returns:
        tuple: The image (H, W, 3), the maps of the sites, and the
        backbone input's shape (C, H, W).
    """
    import mmcv
    from mmseg.apis import inference_model
    sample, = predicted_with_masks(model, backbone,
                                   lambda: [inference_model(model, path)])
    masks = sample.dispatch_masks.float().numpy()  # rows, sites, tokens
    grid = sample.metainfo['dispatch_grid']
    patch = backbone.patch_size
    height, width = sample.metainfo['img_shape']
    image = mmcv.imresize(mmcv.imread(path, channel_order='rgb'),
                          (width, height))
    if masks.shape[0] == 1:  # one forward of the whole (padded) image
        size = (grid[0] * patch, grid[1] * patch)
        maps = [mask_to_grid(m, grid) for m in masks[0]]
    else:  # crops, placed as mmseg's slide_inference places them
        divisor = (model.data_preprocessor.test_cfg or {}).get(
            'size_divisor') or patch
        size = (-(-height // divisor) * divisor, -(-width // divisor) *
                divisor)
        maps = slide_maps(masks, grid, patch, size, model.test_cfg)
    image = np.pad(image, ((0, size[0] - height), (0, size[1] - width),
                           (0, 0)))
    return image, maps, (3, *size)


def slide_maps(masks: np.ndarray, grid, patch: int, size,
               test_cfg) -> List[np.ndarray]:
    """Per site, the share of the sliding-window crops over each pixel that
    computed it (``masks``: crops, sites, tokens, in mmseg's crop order)."""
    (crop_h, crop_w), (stride_h, stride_w) = test_cfg.crop_size, \
        test_cfg.stride
    height, width = size
    rows = max(height - crop_h + stride_h - 1, 0) // stride_h + 1
    cols = max(width - crop_w + stride_w - 1, 0) // stride_w + 1
    if rows * cols != masks.shape[0]:
        raise ValueError(f'{masks.shape[0]} crops recorded, {rows}x{cols} '
                         'expected from the test_cfg')
    computed = np.zeros((masks.shape[1], height, width))
    covered = np.zeros((height, width))
    for index in range(rows * cols):
        y2 = min((index // cols) * stride_h + crop_h, height)
        x2 = min((index % cols) * stride_w + crop_w, width)
        y1, x1 = max(y2 - crop_h, 0), max(x2 - crop_w, 0)
        for site, mask in enumerate(masks[index]):
            cells = mask_to_grid(mask, grid).astype(np.float64)
            computed[site, y1:y2, x1:x2] += np.kron(
                cells, np.ones((patch, patch)))[:y2 - y1, :x2 - x1]
        covered[y1:y2, x1:x2] += 1
    return list(computed / np.maximum(covered, 1))


def clip_dispatch(model, backbone, args) -> Tuple[list, np.ndarray, tuple]:
    """A clip (``--num-frames`` frames of a video or frame folder, or one
    image) through the recognizer's ``predict``: its frames and, per frame
    and site, the dispatch mask from the prediction's data sample."""
    from mmaction.structures import ActionDataSample
    frames = args.num_frames or clip_len_of(model.cfg) or DEFAULT_NUM_FRAMES
    if is_video(args.input):
        raw = read_frames(args.input, frames)
    else:  # one image: a clip of one frame
        import mmcv
        raw = [mmcv.imread(args.input, channel_order='rgb')]
    size = tuple(args.shape) if args.shape else backbone.img_size
    inputs, images = clip_inputs(model, raw, size)
    inputs, images = pad_to_patches(inputs, images, backbone.patch_size)
    with torch.no_grad():  # (N, views, C, T, H, W): one view
        sample, = predicted_with_masks(
            model, backbone,
            lambda: model.predict(inputs[:, None], [ActionDataSample()]))
    masks = sample.dispatch_masks.float().numpy()  # frames, sites, tokens
    return images, masks, tuple(inputs.shape[1:])


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
    sites = backbone.dispatch_sites
    os.makedirs(args.out, exist_ok=True)
    name = osp.splitext(osp.basename(osp.normpath(args.input)))[0]
    if not osp.exists(args.input):
        raise FileNotFoundError(f'{args.input} does not exist')
    video = model.cfg.default_scope == 'mmaction'
    written = []
    if video:
        images, masks, input_shape = clip_dispatch(model, backbone, args)
        grid = (input_shape[-2] // backbone.patch_size,
                input_shape[-1] // backbone.patch_size)
        frame_maps = [[mask_to_grid(m, grid) for m in frame]
                      for frame in masks]
    else:
        if is_video(args.input):
            raise ValueError(
                f'{args.input}: a segmentation config ({model.cfg.filename}) '
                'takes images; give an image file')
        image, maps, input_shape = image_dispatch(model, backbone,
                                                  args.input)
        images, frame_maps = [image], [maps]
    for t, (image, maps) in enumerate(zip(images, frame_maps)):
        canvas = render_dispatch_grid(image, maps, sites, args.cols)
        stem = f'{name}_frame{t:03d}' if video else name
        path = osp.join(args.out, f'{stem}_dispatch.png')
        cv2.imwrite(path, canvas[..., ::-1])
        written.append(path)
    # per site, one mask per frame: (sites, frames, tokens or pixels)
    masks = [np.stack([maps[s].reshape(-1) for maps in frame_maps])
             for s in range(len(sites))]

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
                input_shape=list(input_shape),
                sites=[list(s) for s in sites],
                rates=rates,
                frame_rates=per_frame), file, indent=2)
    written += [plot_path, json_path]
    print(f'mean activation rate {np.mean(rates):.3f} over {len(sites)} '
          f'dispatchers; wrote {len(written)} files to {args.out}')
    return written


if __name__ == '__main__':
    main()
