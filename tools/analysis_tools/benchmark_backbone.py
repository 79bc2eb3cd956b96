"""Inference speed: DyT vs the dense ViT vs the adapter-only baseline.

In one process, with the same (random) pre-trained weights and the same
inputs, times the dense timm ViT, the adapter-only DyTViT and DyT's gathered
evaluation path, and compares DyT's measured speedup with the FLOPs bound at
the measured activation rate. See benchmark_models.py beside this file for
the models and the method, and BENCHMARKS.md for results. On a machine whose
cores other jobs share, use ``--threads 1``: several OpenMP threads competing
with other processes make wall times swing by tens of percent.

Examples::

    cd tools/analysis_tools
    python benchmark.py --preset vit-b-224 --json vit_b_224.json
    python benchmark.py --preset vit-b-512 --batch 2 --threads 2
    python benchmark.py --preset vit-b-224 --batch 8 --rate 1.0
    python benchmark.py --preset vitdet-b-1024 --rate 0.5 --repeats 5
    python benchmark.py --preset vit-b-224 --batch 1 --compile  # + compiled
    python benchmark.py --preset vit-b-224 --batch 1 --prepack  # + packed
    python benchmark.py --preset vit-b-224 --batch 1 8 --bf16  # + autocast
    python benchmark.py --arch tiny --img-size 64 --batch 1 4
    python benchmark.py --config ../../configs/ade20k/dyt_vitb_segmenter.py \\
        --rate 0.5 --batch 1   # the whole segmentor (benchmark_whole.py)
    python benchmark.py --config ../../configs/ade20k/dyt_vitb_segmenter.py \\
        --e2e --shapes 512x2048 --precision fp32 bf16  # tools/test.py's
        # path per image: sliding window, batched crops vs crop by crop
        # (benchmark_e2e.py)
"""
import argparse
import json
import os.path as osp
import platform
from typing import List, Optional

import torch

import mmdyt  # noqa: F401  (compat fixes, registration)
from benchmark_models import (BF16_COLUMNS, COMPILED_COLUMNS,
                              PREPACKED_COLUMNS, PRESETS, benchmark_setting,
                              build_benchmark_models, format_markdown)
from benchmark_peers import reset_compiled
from benchmark_e2e import (DEFAULT_SHAPES, PRECISIONS, benchmark_e2e,
                           e2e_variants, format_e2e_markdown)
from benchmark_whole import (benchmark_whole, build_whole_models,
                             format_whole_markdown)
from model_inputs import load_config


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--preset',
        choices=sorted(PRESETS),
        help='a named setting (default: vit-b-224 unless '
        '--arch is given)')
    parser.add_argument(
        '--config',
        help='time the whole model of this mmseg, mmaction or mmdet config '
        '(segmentor, recognizer on one view of a clip, or detector; see '
        'benchmark_whole.py) with DyT, adapter-only and dense backbones, at '
        "its backbone's img_size (or --img-size) instead of a preset")
    parser.add_argument(
        '--e2e',
        action='store_true',
        help="with --config: time the config's whole test step per sample "
        '(data preprocessor, sliding window or views, post-processing) on '
        'images of --shapes through its test pipeline (benchmark_e2e.py)')
    parser.add_argument(
        '--shapes',
        nargs='+',
        help='--e2e: image shapes HxW before the test pipeline (default: '
        "the task's, e.g. ADE20K's 512x683 512x1024 512x2048)")
    parser.add_argument(
        '--precision',
        nargs='+',
        choices=PRECISIONS,
        default=['fp32'],
        help='--e2e: fp32 and/or bf16 (torch.autocast on the CPU, as '
        'tools/test.py --amp)')
    parser.add_argument(
        '--crop-modes',
        nargs='+',
        choices=['batched', 'crop1'],
        default=['batched', 'crop1'],
        help="--e2e, sliding-window segmentors: the recipe's batched crops "
        "and/or mmseg's crop by crop (crop_batch=1)")
    parser.add_argument(
        '--models',
        nargs='+',
        choices=['dyt', 'adapter', 'dense'],
        default=['dyt', 'adapter', 'dense'],
        help='--e2e: the twins to time')
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
    parser.add_argument(
        '--rate',
        type=float,
        help='target activation rate in [0, 1], set by shifting the '
        'dispatcher biases (default: the random dispatchers, ~0.5)')
    parser.add_argument(
        '--threads',
        type=int,
        nargs='+',
        help='torch.set_num_threads, one run per value (default: torch)')
    parser.add_argument(
        '--warmup', type=int, default=2, help='untimed forwards per model')
    parser.add_argument(
        '--repeats', type=int, default=10, help='timed forwards per model')
    parser.add_argument(
        '--timer',
        choices=['wall', 'cpu'],
        default='wall',
        help='wall-clock time (default), or the CPU time of this process: '
        'steadier on a busy shared machine, with --threads 1')
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
        help='add the dense model and DyT under torch.autocast in bfloat16 '
        '(as tools/test.py --amp runs them on a CPU) as peers')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    parser.add_argument('--json', help='write the rows to this file')
    args = parser.parse_args(argv)
    if args.rate is not None and not 0 <= args.rate <= 1:
        parser.error('--rate must be in [0, 1]')
    if args.repeats < 1 or args.warmup < 0:
        parser.error('--repeats must be >= 1 and --warmup >= 0')
    if args.batch and min(args.batch) < 1:
        parser.error('--batch sizes must be >= 1')
    if args.e2e and not args.config:
        parser.error('--e2e needs --config')
    try:
        args.shapes = [tuple(int(side) for side in shape.split('x'))
                       for shape in args.shapes or []]
    except ValueError:
        parser.error(f'--shapes take HxW, e.g. 512x2048; got {args.shapes}')
    if any(len(shape) != 2 or min(shape) < 1 for shape in args.shapes):
        parser.error(f'--shapes take HxW, e.g. 512x2048; got {args.shapes}')
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


def cpu_model() -> str:
    """The CPU's model name: speed ratios depend on it (which kernels a
    library picks differs between Intel and AMD CPUs, BENCHMARKS.md)."""
    try:
        with open('/proc/cpuinfo') as file:
            for line in file:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_bf16() -> str:
    """The CPU's bfloat16 matrix units, from its /proc/cpuinfo flags:
    ``'AMX-BF16'``, ``'AVX512-BF16'`` or ``'none'`` (what bfloat16
    autocast can gain depends on them)."""
    try:
        with open('/proc/cpuinfo') as file:
            flags = next((line.split(':', 1)[1].split() for line in file
                          if line.startswith('flags')), [])
    except OSError:
        flags = []
    if 'amx_bf16' in flags:
        return 'AMX-BF16'
    return 'AVX512-BF16' if 'avx512_bf16' in flags else 'none'


def main(argv: Optional[List[str]] = None) -> List[dict]:
    """Run the benchmark; returns the rows (also for tests)."""
    args = parse_args(argv)
    threads = torch.get_num_threads()
    try:
        return run(args)
    finally:  # called in-process (tests), leave the thread count as it was
        torch.set_num_threads(threads)


def run_whole(args: argparse.Namespace) -> List[dict]:
    """Benchmark the whole model of ``args.config`` at every thread count
    and batch size; returns the rows."""
    cfg = load_config(args.config)
    models = build_whole_models(cfg)
    size = cfg.model.backbone.img_size
    size = (args.img_size, ) * 2 if args.img_size else (
        (size, size) if isinstance(size, int) else tuple(size))
    name = osp.splitext(osp.basename(args.config))[0]
    rows = []
    for threads in args.threads or [torch.get_num_threads()]:
        torch.set_num_threads(threads)
        for batch in args.batch or [1]:
            rows.append(
                benchmark_whole(
                    models, name, batch, size,
                    rate=0.5 if args.rate is None else args.rate,
                    warmup=args.warmup, repeats=args.repeats,
                    timer=args.timer, seed=args.seed))
    print(f'\n{cpu_model()}, torch {torch.__version__}; timed: '
          f'{rows[0]["timed"]}; FLOPs: '
          f'{rows[0]["parts"]}; '
          f'median {args.timer} time of {args.repeats} interleaved rounds, '
          'ratios with 95% bootstrap intervals\n')
    print(format_whole_markdown(rows))
    return rows


def run_e2e(args: argparse.Namespace) -> List[dict]:
    """Time the test step of ``args.config`` end to end at every thread
    count and shape; returns the rows."""
    cfg = load_config(args.config)
    models = build_whole_models(cfg)
    variants = e2e_variants(models, args.models, args.precision,
                            args.crop_modes)
    name = osp.splitext(osp.basename(args.config))[0]
    rows = []
    for threads in args.threads or [torch.get_num_threads()]:
        torch.set_num_threads(threads)
        for shape in args.shapes or DEFAULT_SHAPES[models.task]:
            rows.append(
                benchmark_e2e(
                    models, cfg, name, shape, variants,
                    rate=0.5 if args.rate is None else args.rate,
                    warmup=args.warmup, repeats=args.repeats,
                    timer=args.timer, seed=args.seed))
    print(f'\n{cpu_model()}, torch {torch.__version__}; timed: '
          "the config's test_step per sample; median "
          f'{args.timer} time of {args.repeats} interleaved rounds, ratios '
          'with 95% bootstrap intervals\n')
    print(format_e2e_markdown(rows))
    return rows


def run(args: argparse.Namespace) -> List[dict]:
    """Benchmark the whole model of ``--config`` or the backbone setting
    of ``args``; write ``--json``; returns the rows."""
    if args.e2e:
        rows = run_e2e(args)
    else:
        rows = run_whole(args) if args.config else run_backbones(args)
    cpu, bf16 = cpu_model(), cpu_bf16()
    for row in rows:
        row.update(cpu=cpu, cpu_bf16=bf16)
    if args.json:
        with open(args.json, 'w') as file:
            json.dump(rows, file, indent=2)
        print(f'\nwrote {args.json}')
    return rows


def run_backbones(args: argparse.Namespace) -> List[dict]:
    """Benchmark the backbone setting of ``args`` at every thread count;
    returns the rows."""
    setting = resolve_setting(args)
    models = build_benchmark_models(
        setting['arch'], setting['img_size'], seed=args.seed,
        vitdet=setting.get('vitdet', False),
        swin=setting.get('swin', False))
    if args.prepack:
        models.prepack()
    if args.bf16:
        models.add_bf16()
    rows = []
    for threads in args.threads or [torch.get_num_threads()]:
        torch.set_num_threads(threads)
        if args.compile:  # compiled kernels keep their thread count
            reset_compiled()
            models.compile(args.compile_backend)
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
                    seed=args.seed))
    print(f'\n{cpu_model()}, torch {torch.__version__}; median {args.timer} '
          'time of '
          f'{args.repeats} interleaved rounds, ratios with 95% bootstrap '
          'intervals\n')
    print(format_markdown(rows))
    if args.compile:
        print(f'\ntorch.compile ({args.compile_backend}):\n')
        print(format_markdown(rows, COMPILED_COLUMNS))
    if args.prepack:
        print('\npre-packed weights (eager):\n')
        print(format_markdown(rows, PREPACKED_COLUMNS))
    if args.bf16:
        print(f'\nbfloat16 autocast (eager; CPU bfloat16 units: '
              f'{cpu_bf16()}):\n')
        print(format_markdown(rows, BF16_COLUMNS))
    return rows


if __name__ == '__main__':
    main()
