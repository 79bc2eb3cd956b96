"""Speed of DyT in the deployment runtimes: PyTorch eager, ONNX Runtime and
OpenVINO, against its adapter-only and dense twins, in one process.

For each setting the three twins share every weight (random: nothing is
downloaded; DyT's dispatchers are set to ``--rate``) and each is exported
to ONNX (DyT with its data-dependent token skipping), then run by ONNX
Runtime and OpenVINO (float32, ``--threads`` threads) beside the PyTorch
eager model, all on the CPU: nine models plus the PyTorch dense model timed
again (the noise control), interleaved in a rotating order, wall time
(``time.perf_counter``), ratios with 95% bootstrap intervals. Before timing,
every runtime's output is checked against PyTorch's. ``--openvino-bf16``
adds OpenVINO at bfloat16 inference precision (runtime ``openvino_bf16``).
The method is ``mmdyt_tools.benchmark.runtimes``. Settings:

- ``--preset vit-b-224`` (or another preset of
  ``benchmark_backbone.py``): the ViT-B/16 backbone alone, the dense twin
  being timm's ViT;
- ``--config CONFIG``: a segmentor's or recognizer's whole ``mode='tensor'``
  forward (the twins of ``benchmark_model_forward.py``).

Examples::

    python tools/deployment/benchmark_runtimes.py --preset vit-b-224 \\
        --batch 1 8 --json benchmarks/deploy_vit_b_224.json
    python tools/deployment/benchmark_runtimes.py --preset vit-b-224 \
        --batch 8 --openvino-bf16 --json benchmarks/deploy_bf16_vit_b_224.json
    python tools/deployment/benchmark_runtimes.py \\
        --config configs/ade20k/dyt_vitb_segmenter.py --shape 512 512 \\
        --batch 1 --json benchmarks/deploy_segmenter_512.json
"""
import argparse
import json
import os
import os.path as osp
import tempfile
from typing import List, Optional

import torch

import mmdyt  # noqa: F401  (compat fixes, registration)
from mmdyt_tools.benchmark.presets import PRESETS
from mmdyt_tools.benchmark.runtimes import (backbone_twins,
                                            benchmark_runtimes, format_rows,
                                            whole_twins)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument('--preset', choices=sorted(PRESETS),
                      help='a backbone setting')
    what.add_argument('--config', help='a segmentation or video config: '
                      'its whole mode=tensor forward')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input size of --config (default: its '
                        'backbone\'s img_size)')
    parser.add_argument('--batch', type=int, nargs='+', default=[1])
    parser.add_argument('--rate', type=float, default=0.5,
                        help='DyT\'s activation rate (default 0.5)')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--export-dir',
                        help='keep the exported files here (default: a '
                        'temporary folder)')
    parser.add_argument(
        '--openvino-bf16', action='store_true',
        help='also run the exports in OpenVINO at bfloat16 inference '
        'precision (its default on CPUs with bfloat16 units)')
    parser.add_argument('--json', help='write the rows to this file')
    args = parser.parse_args(argv)
    if not 0 <= args.rate <= 1:
        parser.error(f'--rate must be in [0, 1], got {args.rate}')
    return args


def main(argv: Optional[List[str]] = None) -> List[dict]:
    """Run the benchmark; returns the rows."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.preset:
        twins, backbone, size, frames = backbone_twins(args.preset)
        setting = args.preset
    else:
        twins, backbone, size, frames = whole_twins(args.config, args.shape)
        setting = osp.splitext(osp.basename(args.config))[0] + \
            f'-{size[0]}x{size[1]}'
    export_dir = args.export_dir or tempfile.mkdtemp(prefix='mmdyt_onnx_')
    os.makedirs(export_dir, exist_ok=True)
    rows = []
    for batch in args.batch:
        generator = torch.Generator().manual_seed(0)
        shape = (batch, 3) + ((frames, ) if frames else ()) + tuple(size)
        inputs = torch.randn(*shape, generator=generator)
        print(f'{setting}, batch {batch}: exporting and checking the twins '
              f'in {export_dir}', flush=True)
        rows.append(benchmark_runtimes(setting, twins, backbone, inputs,
                                       args.rate, export_dir, args.threads,
                                       args.warmup, args.repeats,
                                       args.openvino_bf16))
    print(format_rows(rows))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(rows, f, indent=1)
        print(f'wrote {args.json}')
    return rows


if __name__ == '__main__':
    main()
