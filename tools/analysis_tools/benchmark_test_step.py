"""Test-step speed: a config's ``model.test_step`` per sample, end to end,
with DyT, adapter-only and dense backbones.

Times what ``tools/test.py`` runs per image or clip: the data preprocessor,
the sliding window or the views, the model and the post-processing
(``model.test_step``), on images of ``--shapes`` sent through the config's
test pipeline, in float32 and/or bfloat16 autocast (``--precision``), with
a sliding-window segmentor's batched crops and/or mmseg's crop by crop
(``--crop-modes``). The twins are those of ``benchmark_model_forward.py``;
the method is ``mmdyt_tools.benchmark.test_step``. The models and inputs are
on the CPU and the clock is ``time.perf_counter`` (``--timer wall``) or
``time.process_time`` (``--timer cpu``).

Examples::

    python tools/analysis_tools/benchmark_test_step.py \\
        --config configs/ade20k/dyt_vitb_segmenter.py \\
        --shapes 512x2048 --precision fp32 bf16
    python tools/analysis_tools/benchmark_test_step.py \\
        --config configs/ade20k/dyt_vitb.py --shapes 512x2048 \\
        --models dyt adapter --threads 2 --warmup 1 --repeats 3
"""
import argparse
import os.path as osp
from typing import List, Optional

import torch

import mmdyt  # noqa: F401  (compat fixes, registration)
from mmdyt_tools.benchmark.cli import (add_timing_args, check_timing_args,
                                       header, run_keeping_threads,
                                       save_rows, thread_counts)
from mmdyt_tools.benchmark.test_step import (DEFAULT_SHAPES, PRECISIONS,
                                             benchmark_e2e, e2e_variants,
                                             format_e2e_markdown)
from mmdyt_tools.benchmark.whole_model import build_whole_models
from mmdyt_tools.inputs import load_config


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=' '.join(__doc__.split('\n\n')[0].split()))
    parser.add_argument(
        '--config',
        required=True,
        help='the mmseg, mmaction or mmdet config whose test step is timed')
    parser.add_argument(
        '--shapes',
        nargs='+',
        help='image shapes HxW before the test pipeline (default: the '
        "task's, e.g. ADE20K's 512x683 512x1024 512x2048)")
    parser.add_argument(
        '--precision',
        nargs='+',
        choices=PRECISIONS,
        default=['fp32'],
        help='fp32 and/or bf16 (torch.autocast on the CPU, as tools/test.py '
        '--amp)')
    parser.add_argument(
        '--crop-modes',
        nargs='+',
        choices=['batched', 'crop1'],
        default=['batched', 'crop1'],
        help="sliding-window segmentors: the recipe's batched crops and/or "
        "mmseg's crop by crop (crop_batch=1)")
    parser.add_argument(
        '--models',
        nargs='+',
        choices=['dyt', 'adapter', 'dense'],
        default=['dyt', 'adapter', 'dense'],
        help='the twins to time')
    add_timing_args(parser, rate_default='0.5')
    args = parser.parse_args(argv)
    check_timing_args(parser, args)
    try:
        args.shapes = [tuple(int(side) for side in shape.split('x'))
                       for shape in args.shapes or []]
    except ValueError:
        parser.error(f'--shapes take HxW, e.g. 512x2048; got {args.shapes}')
    if any(len(shape) != 2 or min(shape) < 1 for shape in args.shapes):
        parser.error(f'--shapes take HxW, e.g. 512x2048; got {args.shapes}')
    return args


def run(args: argparse.Namespace) -> List[dict]:
    """Time the test step of ``args.config`` end to end at every thread
    count and shape; print the table, write ``--json``; returns the rows."""
    cfg = load_config(args.config)
    models = build_whole_models(cfg)
    variants = e2e_variants(models, args.models, args.precision,
                            args.crop_modes)
    name = osp.splitext(osp.basename(args.config))[0]
    rows = []
    for threads in thread_counts(args):
        torch.set_num_threads(threads)
        for shape in args.shapes or DEFAULT_SHAPES[models.task]:
            rows.append(
                benchmark_e2e(
                    models, cfg, name, shape, variants,
                    rate=0.5 if args.rate is None else args.rate,
                    warmup=args.warmup, repeats=args.repeats,
                    timer=args.timer, seed=args.seed))
    print(header(args.timer, args.repeats,
                 "the config's test_step per sample"))
    print(format_e2e_markdown(rows))
    return save_rows(rows, args.json)


def main(argv: Optional[List[str]] = None) -> List[dict]:
    """Run the benchmark; returns the rows (also for tests)."""
    return run_keeping_threads(run, parse_args(argv))


if __name__ == '__main__':
    main()
