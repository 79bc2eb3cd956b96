"""Whole-model forward speed: a config's model with DyT, adapter-only and
dense backbones.

Times ``model(inputs, mode='tensor')`` of the whole inference model of an
mmseg, mmaction2 or mmdet config (segmentor: backbone + neck + decode head;
recognizer: backbone + cls head on one view of a clip; detector: backbone +
neck + RPN + RoI heads) with three backbones on one set of random weights:
DyT at ``--rate`` (default 0.5), its adapter-only twin and the plain ViT, at
the backbone's ``img_size`` (or ``--img-size``), on random inputs. No data
preprocessor, pipeline or post-processing is timed (that is
``benchmark_test_step.py``). The method is
``mmdyt_tools.benchmark.whole_model``; the models and inputs are on the CPU
and the clock is ``time.perf_counter`` (``--timer wall``) or
``time.process_time`` (``--timer cpu``).

Examples::

    python tools/analysis_tools/benchmark_model_forward.py \\
        --config configs/ade20k/dyt_vitb_segmenter.py --rate 0.5 --batch 1
    python tools/analysis_tools/benchmark_model_forward.py \\
        --config configs/coco/dyt_vitb_mask-rcnn_1x.py --threads 2 \\
        --repeats 5
"""
import argparse
import os.path as osp
from typing import List, Optional

import torch

import mmdyt  # noqa: F401  (compat fixes, registration)
from mmdyt_tools.benchmark.cli import (add_timing_args, check_timing_args,
                                       header, run_keeping_threads,
                                       save_rows, thread_counts)
from mmdyt_tools.benchmark.whole_model import (benchmark_whole,
                                               build_whole_models,
                                               format_whole_markdown)
from mmdyt_tools.inputs import load_config


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=' '.join(__doc__.split('\n\n')[0].split()))
    parser.add_argument(
        '--config',
        required=True,
        help='the mmseg, mmaction or mmdet config whose whole model is '
        'timed (segmentor, recognizer on one view of a clip, or detector)')
    parser.add_argument(
        '--img-size',
        type=int,
        help="input height = width (default: the backbone's img_size)")
    parser.add_argument(
        '--batch', type=int, nargs='+', help='batch sizes (default: 1)')
    add_timing_args(parser, rate_default='0.5')
    args = parser.parse_args(argv)
    check_timing_args(parser, args)
    return args


def run(args: argparse.Namespace) -> List[dict]:
    """Benchmark the whole model of ``args.config`` at every thread count
    and batch size; print the table, write ``--json``; returns the rows."""
    cfg = load_config(args.config)
    models = build_whole_models(cfg)
    size = cfg.model.backbone.img_size
    size = (args.img_size, ) * 2 if args.img_size else (
        (size, size) if isinstance(size, int) else tuple(size))
    name = osp.splitext(osp.basename(args.config))[0]
    rows = []
    for threads in thread_counts(args):
        torch.set_num_threads(threads)
        for batch in args.batch or [1]:
            rows.append(
                benchmark_whole(
                    models, name, batch, size,
                    rate=0.5 if args.rate is None else args.rate,
                    warmup=args.warmup, repeats=args.repeats,
                    timer=args.timer, seed=args.seed))
    print(header(args.timer, args.repeats,
                 f'{rows[0]["timed"]}; FLOPs: {rows[0]["parts"]}'))
    print(format_whole_markdown(rows))
    return save_rows(rows, args.json)


def main(argv: Optional[List[str]] = None) -> List[dict]:
    """Run the benchmark; returns the rows (also for tests)."""
    return run_keeping_threads(run, parse_args(argv))


if __name__ == '__main__':
    main()
