"""Evaluate a trained model on the config's test set.

Examples::

    python tools/test.py configs/demo/seg_demo.py \\
        work_dirs/seg_demo/iter_600.pth
    python tools/test.py CONFIG CKPT --dispatch-threshold 0.6  # skip more
"""
import argparse
import os

from mmengine.config import DictAction

import mmdyt  # noqa: F401  (compat fixes, registration)
from mmdyt.models.backbones.checkpoint_loading import check_checkpoint_file
from runner_setup import build_runner, finish_distributed, load_config


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='where logs and metrics go')
    parser.add_argument(
        '--dispatch-threshold',
        type=float,
        help='evaluation threshold of the token dispatchers in (0, 1): '
        'higher skips more tokens (default: the config\'s, 0.5)')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='run the test under autocast (float16 on GPUs, bfloat16 on '
        'CPUs)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main() -> dict:
    """Run the test; returns its metrics."""
    args = parse_args()
    cfg = load_config(args.config, args.cfg_options, args.work_dir)
    check_checkpoint_file(args.checkpoint)  # exists, complete, intact
    cfg.launcher = args.launcher
    cfg.load_from = args.checkpoint
    if args.amp:  # mmengine's TestLoop: autocast (bf16 on CPUs)
        cfg.test_cfg = dict(cfg.get('test_cfg') or dict(type='TestLoop'),
                            fp16=True)
    if args.dispatch_threshold is not None:
        backbone = cfg.model.backbone
        backbone.dispatcher_cfg = dict(
            backbone.get('dispatcher_cfg') or {},
            threshold=args.dispatch_threshold)
    runner = build_runner(cfg)
    load_frozen_bases(runner.model)
    metrics = runner.test()
    if runner.rank == 0:
        print_summary(metrics)
    finish_distributed()
    return metrics


def load_frozen_bases(model) -> None:
    """Load the frozen base ViT of every backbone that saves adapter-only
    checkpoints (``save_trainable_only``) from its ``init_cfg``: such a
    checkpoint holds only what trains, and mmengine's test does not
    initialise the model before loading it."""
    for module in model.modules():
        if getattr(module, 'save_trainable_only', False):
            module.load_pretrained()


def print_summary(metrics: dict) -> None:
    """Print the test metrics, and DyT's saving when it was measured."""
    print('\n=== test results ===')
    for name, value in metrics.items():
        print(f'{name}: {value}')
    if 'backbone_gflops' in metrics:
        dyt = metrics['backbone_gflops']
        complete = metrics['backbone_gflops_complete']
        print(f'backbone GFLOPs per sample: DyT {dyt:.4f} vs {complete:.4f} '
              f'without skipping ({100 * (1 - dyt / complete):.1f}% saved) '
              f"at activation rate {metrics['act_rate']:.3f}")


if __name__ == '__main__':
    main()
