"""What the benchmark CLIs share: their timing options, running at several
thread counts, the header line and writing the rows."""
import argparse
import json
from typing import Callable, List, Optional

import torch

from mmdyt_tools.benchmark.machine import cpu_bf16, cpu_model
from mmdyt_tools.benchmark.timing import CLOCKS


def add_timing_args(parser: argparse.ArgumentParser,
                    rate_default: str) -> None:
    """``--rate``, ``--threads``, ``--warmup``, ``--repeats``, ``--timer``,
    ``--seed`` and ``--json``: the options every benchmark CLI has.

    Args:
        parser (argparse.ArgumentParser): The CLI's parser.
        rate_default (str): What ``--rate`` defaults to, for its help.
    """
    parser.add_argument(
        '--rate',
        type=float,
        help='target activation rate in [0, 1], set by shifting the '
        f'dispatcher biases (default: {rate_default})')
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
        choices=list(CLOCKS),
        default='wall',
        help='wall-clock time (default, time.perf_counter; synchronised '
        'around each forward on a GPU), the CPU time of this process '
        '(time.process_time): steadier on a busy shared machine, with '
        '--threads 1, or CUDA events (a GPU\'s own time)')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    parser.add_argument('--json', help='write the rows to this file')


def check_timing_args(parser: argparse.ArgumentParser,
                      args: argparse.Namespace) -> None:
    """Refuse (``parser.error``) a rate outside [0, 1], no repeats, a
    negative warm-up or a batch size below 1."""
    if args.rate is not None and not 0 <= args.rate <= 1:
        parser.error('--rate must be in [0, 1]')
    if args.repeats < 1 or args.warmup < 0:
        parser.error('--repeats must be >= 1 and --warmup >= 0')
    if getattr(args, 'batch', None) and min(args.batch) < 1:
        parser.error('--batch sizes must be >= 1')


def run_keeping_threads(run: Callable[[argparse.Namespace], List[dict]],
                        args: argparse.Namespace) -> List[dict]:
    """``run(args)``, then the thread count set back to what it was (the
    CLIs' ``main`` also runs in-process, in the tests)."""
    threads = torch.get_num_threads()
    try:
        return run(args)
    finally:
        torch.set_num_threads(threads)


def thread_counts(args: argparse.Namespace) -> List[int]:
    """``--threads``, or torch's current thread count."""
    return args.threads or [torch.get_num_threads()]


def header(timer: str, repeats: int, timed: Optional[str] = None) -> str:
    """The line printed above a table: the CPU, torch, what was timed and
    how."""
    what = f'timed: {timed}; ' if timed else ''
    return (f'\n{cpu_model()}, torch {torch.__version__}; {what}median '
            f'{timer} time of {repeats} interleaved rounds, ratios with 95% '
            'bootstrap intervals\n')


def save_rows(rows: List[dict], path: Optional[str]) -> List[dict]:
    """Add the CPU's model and bfloat16 units to every row; write them to
    ``path`` as JSON if given; returns the rows."""
    cpu, bf16 = cpu_model(), cpu_bf16()
    for row in rows:
        row.update(cpu=cpu, cpu_bf16=bf16)
    if path:
        with open(path, 'w') as file:
            json.dump(rows, file, indent=2)
        print(f'\nwrote {path}')
    return rows
