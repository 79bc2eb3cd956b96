"""Train a DyT model (or any mmseg / mmaction2 model) from a config.

The library follows from the config's ``default_scope``. Examples::

    python tools/train.py configs/ade20k/dyt_vitb.py
    python tools/train.py configs/demo/seg_demo.py --resume   # latest ckpt
    bash tools/dist_train.sh configs/ade20k/dyt_vitb.py 8
"""
import argparse
import os
import re
from typing import Optional

from mmengine.config import DictAction

import mmdyt  # noqa: F401  (compat fixes, registration)
from mmdyt.models.backbones.checkpoint_loading import check_checkpoint_file
from runner_setup import build_runner, load_config


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='where logs and checkpoints go')
    parser.add_argument(
        '--resume',
        nargs='?',
        const='auto',
        help='resume from this checkpoint, or without a path from the '
        'latest checkpoint in the work directory')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='automatic mixed precision: float16 with loss scaling on GPUs, '
        'bfloat16 autocast without')
    parser.add_argument(
        '--no-validate',
        action='store_true',
        help='do not evaluate during training')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, e.g. '
        'model.backbone.dispatcher_cfg.tau=1.0')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main() -> None:
    args = parse_args()
    cfg = load_config(args.config, args.cfg_options, args.work_dir)
    cfg.launcher = args.launcher
    if args.no_validate:
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    if args.amp:
        use_amp(cfg)
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    check_start_checkpoint(cfg)
    build_runner(cfg).train()


def use_amp(cfg) -> None:
    """Mixed precision: mmengine's AmpOptimWrapper (float16, dynamic loss
    scaling) on GPUs; without a GPU, where it cannot run, mmdyt's
    AutocastOptimWrapper (bfloat16 autocast, no loss scaling)."""
    import torch
    from mmengine.logging import print_log
    wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
    if wrapper not in ('OptimWrapper', 'AmpOptimWrapper',
                       'AutocastOptimWrapper'):
        raise ValueError(f'--amp does not support optim_wrapper type '
                         f'{wrapper!r}')
    if torch.cuda.is_available():
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
        return
    cfg.optim_wrapper.type = 'AutocastOptimWrapper'
    cfg.optim_wrapper.pop('loss_scale', None)
    cfg.optim_wrapper.setdefault('dtype', 'bfloat16')
    print_log('--amp without a GPU: bfloat16 autocast '
              '(AutocastOptimWrapper, no loss scaling)', logger='current')


def check_start_checkpoint(cfg) -> None:
    """Check the checkpoint training starts from (``load_from``, or the
    latest one of the work directory for ``--resume``) before anything is
    built: a truncated or corrupt file fails here, naming the file and, for
    ``--resume``, the newest intact checkpoint of the work directory."""
    from mmengine.runner import find_latest_checkpoint
    checkpoint = cfg.get('load_from')
    latest = checkpoint is None and cfg.get('resume')
    if latest:
        checkpoint = find_latest_checkpoint(cfg.work_dir)
    if checkpoint is None:
        return
    try:
        check_checkpoint_file(checkpoint)
    except (ValueError, FileNotFoundError) as error:
        if not latest:
            raise
        good = newest_intact_checkpoint(cfg.work_dir, exclude=checkpoint)
        hint = (f'the newest intact checkpoint there is {good}: resume from '
                f'it with --resume {good}' if good else
                'no other checkpoint there is intact')
        raise ValueError(f'{error}. It is the last checkpoint of '
                         f'{cfg.work_dir} (last_checkpoint); {hint}'
                         ) from error


def newest_intact_checkpoint(work_dir: str, exclude: str) -> Optional[str]:
    """The checkpoint of ``work_dir`` (``iter_N.pth`` / ``epoch_N.pth``)
    with the largest N that passes :func:`check_checkpoint_file`."""
    found = []
    for name in os.listdir(work_dir):
        match = re.fullmatch(r'(iter|epoch)_(\d+)\.pth', name)
        path = os.path.join(work_dir, name)
        if match and os.path.abspath(path) != os.path.abspath(exclude):
            found.append((int(match[2]), path))
    for _, path in sorted(found, reverse=True):
        try:
            check_checkpoint_file(path)
        except (ValueError, FileNotFoundError):
            continue
        return path
    return None


if __name__ == '__main__':
    main()
