"""Backbone speed: DyT vs the dense ViT vs the adapter-only baseline.

Times backbones alone (no neck, no head), in one process, with the same
(random) pre-trained weights and the same random inputs: the dense timm ViT,
the adapter-only DyTViT, DyT's gathered evaluation path and its peers (the
reference gather, the ideal slice; with ``--compile``, ``--prepack`` and
``--bf16`` compiled, pre-packed and bfloat16 peers), and compares
DyT's measured speedup with the FLOPs bound at the measured activation rate.
The models and the method are ``mmdyt_tools.benchmark`` (``models.py``,
``backbone.py``); results are in docs/en/benchmarks/. The models and inputs
are on the CPU; the clock is ``time.perf_counter`` (``--timer wall``) or
``time.process_time`` (``--timer cpu``). On a machine whose cores other jobs
share, use ``--threads 1``: several OpenMP threads competing with other
processes make wall times swing by tens of percent.

For a config's whole model see ``benchmark_model_forward.py``; for its
whole test step (pipeline, sliding window, post-processing)
``benchmark_test_step.py``.

Examples::

    python tools/analysis_tools/benchmark_backbone.py --preset vit-b-224 \\
        --json vit_b_224.json
    python tools/analysis_tools/benchmark_backbone.py --preset vit-b-512 \\
        --batch 2 --threads 2
    python tools/analysis_tools/benchmark_backbone.py --preset vit-b-224 \\
        --batch 8 --rate 1.0
    python tools/analysis_tools/benchmark_backbone.py \\
        --preset vitdet-b-1024 --rate 0.5 --repeats 5
    python tools/analysis_tools/benchmark_backbone.py --preset vit-b-224 \\
        --batch 1 --compile  # + compiled peers
    python tools/analysis_tools/benchmark_backbone.py --preset vit-b-224 \\
        --batch 1 --prepack  # + pre-packed peers
    python tools/analysis_tools/benchmark_backbone.py --preset vit-b-224 \\
        --batch 1 8 --bf16  # + bfloat16 peers
    python tools/analysis_tools/benchmark_backbone.py --arch tiny \\
        --img-size 64 --batch 1 4
"""
import argparse
from typing import List, Optional

import torch

import mmdyt  # noqa: F401  (compat fixes, registration)
from mmdyt_tools.benchmark.backbone import benchmark_setting
from mmdyt_tools.benchmark.cli import (add_timing_args, check_timing_args,
                                       header, run_keeping_threads,
                                       save_rows, thread_counts)
from mmdyt_tools.benchmark.machine import cpu_bf16
from mmdyt_tools.benchmark.models import build_benchmark_models
from mmdyt_tools.benchmark.peers import AMP_DTYPES, reset_compiled
from mmdyt_tools.benchmark.presets import PRESETS
from mmdyt_tools.benchmark.report import (BF16_COLUMNS, COMPILED_COLUMNS,
                                          PREPACKED_COLUMNS, format_markdown)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--preset',
        choices=sorted(PRESETS),
        help='a named setting (default: vit-b-224 unless '
        '--arch is given)')
    parser.add_argument(
        '--arch', help="ViT size instead of the preset's: tiny, small, base, "
        'large')
    parser.add_argument('--img-size', type=int, help='input height = width')
    parser.add_argument(
        '--num-frames', type=int, help='frames per clip (a video setting)')
    parser.add_argument(
        '--batch',
        type=int,
        nargs='+',
        help="batch sizes to run (default: the preset's)")
    add_timing_args(parser, rate_default='the random dispatchers, ~0.5')
    parser.add_argument(
        '--compile',
        action='store_true',
        help='add the dense model and DyT under torch.compile (inductor) '
        'as peers; compiles once per thread count and batch size')
    parser.add_argument(
        '--compile-backend',
        default='inductor',
        help='the torch.compile backend of --compile (default: inductor)')
    parser.add_argument(
        '--prepack',
        action='store_true',
        help='add the dense model and DyT with the weights of their blocks '
        'pre-packed for oneDNN (DyTViT(prepack_weights=True)) as eager '
        'peers')
    parser.add_argument(
        '--bf16',
        action='store_true',
        help='add bfloat16 peers, all under torch.autocast as tools/test.py '
        '--amp runs a model: DyT, the dense model and the ideal slice with '
        'low-precision weight copies (packed, row-aware), and the dense '
        'model and DyT under autocast alone; with --compile also both '
        'compiled in bfloat16')
    parser.add_argument(
        '--amp-dtype',
        choices=sorted(AMP_DTYPES),
        default='bfloat16',
        help='the low precision of the --bf16 peers (default: bfloat16; '
        'float16 for GPUs, where its columns keep their bf16 names and the '
        'rows record amp_dtype)')
    parser.add_argument(
        '--device',
        default='cpu',
        help="where the models run: 'cpu' (default) or a CUDA device")
    args = parser.parse_args(argv)
    check_timing_args(parser, args)
    if args.timer == 'events' and not args.device.startswith('cuda'):
        parser.error('--timer events needs a CUDA --device')
    return args


def resolve_setting(args: argparse.Namespace) -> dict:
    """The preset, with ``--arch``/``--img-size``/... overriding it."""
    if args.preset is None and args.arch is None:
        args.preset = 'vit-b-224'
    setting = dict(PRESETS[args.preset]) if args.preset else dict(
        arch=args.arch, img_size=224, num_frames=None, batches=(1, ))
    for key in ('arch', 'img_size', 'num_frames'):
        if getattr(args, key) is not None:
            setting[key] = getattr(args, key)
    if args.batch:
        setting['batches'] = tuple(args.batch)
    custom = args.preset is None or any(
        getattr(args, key) is not None
        for key in ('arch', 'img_size', 'num_frames'))
    if custom:
        name = f'vit-{setting["arch"]}-{setting["img_size"]}'
        if setting['num_frames']:
            name += f'-video{setting["num_frames"]}'
    else:
        name = args.preset
    setting['name'] = name
    return setting


def run(args: argparse.Namespace) -> List[dict]:
    """Benchmark the backbone setting of ``args`` at every thread count and
    batch size; print the tables, write ``--json``; returns the rows."""
    setting = resolve_setting(args)
    models = build_benchmark_models(
        setting['arch'], setting['img_size'], seed=args.seed,
        vitdet=setting.get('vitdet', False),
        swin=setting.get('swin', False))
    models.to(args.device)
    if args.prepack:
        models.prepack()
    if args.bf16:
        models.add_bf16(AMP_DTYPES[args.amp_dtype])
    rows = []
    for threads in thread_counts(args):
        torch.set_num_threads(threads)
        if args.compile:  # compiled kernels keep their thread count
            reset_compiled()
            models.compile(args.compile_backend)
            if args.bf16:
                models.compile_bf16(args.compile_backend)
        for batch in setting['batches']:
            rows.append(
                benchmark_setting(
                    models,
                    setting['name'],
                    batch,
                    setting['img_size'],
                    num_frames=setting['num_frames'],
                    rate=args.rate,
                    warmup=args.warmup,
                    repeats=args.repeats,
                    timer=args.timer,
                    seed=args.seed,
                    device=args.device))
            if args.bf16:
                rows[-1]['amp_dtype'] = args.amp_dtype
    print(header(args.timer, args.repeats))
    print(format_markdown(rows))
    if args.compile:
        print(f'\ntorch.compile ({args.compile_backend}):\n')
        print(format_markdown(rows, COMPILED_COLUMNS))
    if args.prepack:
        print('\npre-packed weights (eager):\n')
        print(format_markdown(rows, PREPACKED_COLUMNS))
    if args.bf16:
        print(f'\nbfloat16 (CPU bfloat16 units: {cpu_bf16()}):\n')
        print(format_markdown(rows, BF16_COLUMNS))
    return save_rows(rows, args.json)


def main(argv: Optional[List[str]] = None) -> List[dict]:
    """Run the benchmark; returns the rows (also for tests)."""
    return run_keeping_threads(run, parse_args(argv))


if __name__ == '__main__':
    main()
