"""Export a trained DyT model to ONNX, with real token skipping.

Exports the config's whole inference model in ``mode='tensor'``
(``mmdyt_tools.deploy.onnx_export``): a segmentor's logits, a recognizer's
class scores, a detector's backbone + neck features. DyT's dispatch stays
data dependent in the graph (``NonZero``, ``Gather``, ``ScatterND`` per
block). Inputs are the data preprocessor's outputs (normalised float32);
``onnx_infer.py`` and ``test_onnx.py`` do the preprocessing and the
post-processing from the config stored in the file. After the export the
graph is run once by ONNX Runtime on a random input and compared with
PyTorch. Examples::

    python tools/deployment/pytorch2onnx.py configs/demo/seg_demo.py \\
        work_dirs/seg_demo/iter_600.pth --out work_dirs/seg_demo/dyt.onnx
    python tools/deployment/pytorch2onnx.py CONFIG CHECKPOINT --out m.onnx \\
        --shape 512 512 --batch 1 --dynamic-batch --with-rate
    python tools/deployment/pytorch2onnx.py CONFIG CHECKPOINT \\
        --variant dense --out dense.onnx   # the twin without DyT
"""
import argparse
import os
import os.path as osp
from typing import List, Optional, Tuple

import numpy as np
import torch
from mmengine.config import Config, DictAction

import mmdyt  # noqa: F401  (compat fixes, registration)
from mmdyt_tools.deploy.onnx_export import (EXPORTED_PARTS, VARIANTS,
                                            TensorModel, example_input,
                                            export_onnx, graph_op_counts,
                                            task_of, variant_of)
from mmdyt_tools.inputs import clip_len_of, init_task_model, load_config


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='the model\'s config')
    parser.add_argument('checkpoint', help='its trained checkpoint')
    parser.add_argument('--out', required=True, help='the .onnx file')
    parser.add_argument(
        '--shape', type=int, nargs=2, metavar=('H', 'W'),
        help='input height and width; default: the sliding window\'s crop '
        '(segmentors with mode=\'slide\'), else the backbone\'s img_size')
    parser.add_argument('--batch', type=int, default=1,
                        help='batch size of the export (default 1)')
    parser.add_argument('--dynamic-batch', action='store_true',
                        help='leave the batch dimension open')
    parser.add_argument(
        '--variant', choices=VARIANTS, default='dyt',
        help='dyt: the model as trained; adapter: the same weights with '
        'no token skipped; dense: the pre-trained ViT without adapters')
    parser.add_argument(
        '--with-rate', action='store_true',
        help='second output act_rate (B, dispatchers): the share of tokens '
        'each dispatcher computed for each input')
    parser.add_argument('--no-check', action='store_true',
                        help='skip the ONNX Runtime vs PyTorch check')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings')
    args = parser.parse_args(argv)
    if args.batch < 1:
        parser.error(f'--batch must be >= 1, got {args.batch}')
    if args.shape and min(args.shape) < 1:
        parser.error(f'--shape must be positive, got {args.shape}')
    return args


def default_shape(cfg: Config) -> Tuple[int, int]:
    """The input size an export defaults to: the sliding window's crop of a
    segmentor tested with ``mode='slide'``, else the backbone's
    ``img_size``."""
    test_cfg = cfg.model.get('test_cfg') or {}
    if test_cfg.get('mode') == 'slide':
        return tuple(test_cfg['crop_size'])
    size = cfg.model.backbone.get('img_size', 224)
    return (size, size) if isinstance(size, int) else tuple(size)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    task = task_of(cfg)
    cfg.model.backbone.init_cfg = None  # the checkpoint has every weight
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint {args.checkpoint} not found')
    model = variant_of(cfg, init_task_model(cfg, args.checkpoint),
                       args.variant)
    tensor_model = TensorModel(model, task, args.with_rate).eval()
    shape = tuple(args.shape) if args.shape else default_shape(cfg)
    num_frames = clip_len_of(cfg) if task == 'recognizer' else None
    example = example_input(task, shape, args.batch, num_frames)
    backbone = tensor_model.backbone
    metadata = dict(
        config=cfg.pretty_text, task=task, variant=args.variant,
        shape=list(shape), batch=None if args.dynamic_batch else args.batch,
        num_frames=num_frames, dispatchers=len(backbone.dispatch_sites),
        exported=EXPORTED_PARTS[task], checkpoint=args.checkpoint)
    out_dir = osp.dirname(osp.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    print(f'exporting the {args.variant} {task} of {args.config} '
          f'({EXPORTED_PARTS[task]}) for inputs {tuple(example.shape)}')
    names = export_onnx(tensor_model, example, args.out, args.dynamic_batch,
                        metadata)
    ops = graph_op_counts(args.out)
    print(f'wrote {args.out} ({osp.getsize(args.out) / 2**20:.1f} MiB): '
          f'outputs {names}; NonZero {ops.get("NonZero", 0)}, Gather '
          f'{ops.get("Gather", 0)}, ScatterND {ops.get("ScatterND", 0)} '
          f'({len(backbone.dispatch_sites)} dispatchers)')
    if args.no_check:
        return
    from mmdyt_tools.deploy.onnx_runtime import ExportedModel
    runtime_out = ExportedModel(args.out, 'ort')(example.numpy())
    with torch.no_grad():
        torch_out = tensor_model(example)
    error = max(float(np.abs(r - t.numpy()).max())
                for r, t in zip(runtime_out, torch_out))
    print(f'ONNX Runtime vs PyTorch on a random input: largest difference '
          f'{error:.2e}')


if __name__ == '__main__':
    main()
