"""Run a demo end to end, quietly: data, demo backbone, DyT training, test.

Each stage runs the project's own tool (``make_demo_data.py``,
``pretrain_demo_vit.py``, ``tools/train.py``, ``tools/test.py``) with its
output going to ``<work-dir>/demo.log``; the terminal shows one line per
stage with a progress bar and the ETA the tool reports, then the results
table. Examples::

    python tools/demo/run_demo.py seg      # what `make demo` runs
    python tools/demo/run_demo.py video    # `make demo-video`
    python tools/demo/run_demo.py det      # `make demo-det`
    python tools/demo/run_demo.py seg-swin # `make demo-swin` (small Swin)

The detection demo also evaluates the model before training (one step at
learning rate 0: the pre-trained ViT and untrained heads), the baseline its
COCO mAP is compared with.
"""
import argparse
import os
import os.path as osp
import re
import subprocess
import sys
import time
from typing import List, Optional

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMOS = {
    'seg': dict(config='configs/demo/seg_demo.py', work_dir='work_dirs/'
                'seg_demo', metrics=('mIoU', 'aAcc')),
    'video': dict(config='configs/demo/video_demo.py', work_dir='work_dirs/'
                  'video_demo', metrics=('acc/top1', 'acc/mean1')),
    'det': dict(config='configs/demo/det_demo.py', work_dir='work_dirs/'
                'det_demo', metrics=('coco/bbox_mAP', 'coco/bbox_mAP_50',
                                     'coco/segm_mAP', 'coco/segm_mAP_50'),
                baseline=True),
    'seg-swin': dict(config='configs/demo/seg_demo_swin.py', work_dir='work_'
                     'dirs/seg_demo_swin', metrics=('mIoU', 'aAcc'),
                     data='seg', arch='swin'),
}
ARCH_NAMES = dict(vit='ViT', swin='Swin Transformer')
#: ``--cfg-options`` of the untrained baseline: one step at learning rate 0
#: (nothing changes), then the config's evaluation.
BASELINE_OPTIONS = ['train_cfg.max_iters=1', 'train_cfg.val_interval=1',
                    'optim_wrapper.optimizer.lr=0', 'param_scheduler=[]']
#: ``[k/N]`` progress and mmengine's ``eta: h:mm:ss`` in a tool's output.
PROGRESS = re.compile(r'\[\s*(\d+)/(\d+)\]')
ETA = re.compile(r'eta: (\d+:\d\d:\d\d)')
BAR_WIDTH = 24


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('demo', choices=sorted(DEMOS), help='which demo')
    parser.add_argument('--data', default='data/demo',
                        help='where the generated data go')
    return parser.parse_args(argv)


class Stage:
    """One step of the demo: a command whose output goes to the log while
    the terminal shows its progress."""

    def __init__(self, log, index: int, total: int, title: str):
        self.log = log
        self.prefix = f'[{index}/{total}] {title}'
        self.tty = sys.stdout.isatty()
        self.shown = -1  # the last quarter printed without a terminal

    def _show(self, done: int, count: int, eta: Optional[str]) -> None:
        filled = BAR_WIDTH * done // count
        bar = '#' * filled + '.' * (BAR_WIDTH - filled)
        text = f'{self.prefix} [{bar}] {done}/{count}' + (
            f' eta {eta}' if eta else '')
        if self.tty:
            print('\r' + text, end='', flush=True)
        elif 4 * done // count > self.shown:  # a line per quarter
            self.shown = 4 * done // count
            print(text, flush=True)

    def run(self, command: List[str]) -> str:
        """Run ``command``; return its output. Exits on failure, showing
        the end of the output."""
        start = time.time()
        if not self.tty:
            print(self.prefix, flush=True)
        self.log.write(f'\n$ {" ".join(command)}\n')
        self.log.flush()
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, bufsize=1)
        lines = []
        for line in process.stdout:
            self.log.write(line)
            lines.append(line)
            match = PROGRESS.search(line)
            if match and 'Iter(val)' not in line:
                eta = ETA.search(line)
                self._show(int(match[1]), int(match[2]),
                           eta[1] if eta else None)
        process.wait()
        self.log.flush()
        seconds = time.time() - start
        if self.tty:
            print('\r' + ' ' * (len(self.prefix) + BAR_WIDTH + 40), end='\r')
        if process.returncode:
            print(f'{self.prefix}: FAILED (exit {process.returncode}); the '
                  f'end of its output (all of it in {self.log.name}):')
            print(''.join(lines[-30:]), end='')
            sys.exit(process.returncode)
        print(f'{self.prefix}: done in {seconds:.0f} s', flush=True)
        return ''.join(lines)


def val_summary(output: str) -> dict:
    """The metrics of the last ``Iter(val)`` line a training run logs."""
    line = [row for row in output.splitlines() if 'Iter(val)' in row][-1]
    return {name: float(value) for name, value in
            re.findall(r'(\S+): (-?[\d.]+)', line.split(']', 1)[1])}


def test_summary(output: str) -> dict:
    """The metrics that ``tools/test.py`` prints at its end."""
    summary = output[output.rindex('=== test results ==='):].splitlines()
    metrics = {}
    for line in summary[1:]:
        name, _, value = line.partition(': ')
        if value and ' ' not in name:
            metrics[name] = float(value)
    return metrics


def format_metric(name: str, value: float) -> str:
    if name.startswith('acc/'):
        return f'{100 * value:.1f}%'
    if 'mAP' in name:
        return f'{value:.3f}'
    return f'{value:.2f}'


def results_table(metrics: dict, names, baseline: Optional[dict] = None
                  ) -> str:
    rows = []
    for name in names:
        if name not in metrics:
            continue
        value = format_metric(name, metrics[name])
        if baseline and name in baseline:
            value += (f' (untrained: '
                      f'{format_metric(name, baseline[name])})')
        rows.append((name, value))
    rate = metrics.get('act_rate')
    if rate is not None:
        rows.append(('activation rate (target 0.5)', f'{rate:.3f}'))
    if 'backbone_gflops' in metrics:
        dyt = metrics['backbone_gflops']
        full = metrics['backbone_gflops_complete']
        rows.append(('backbone GFLOPs per sample, DyT vs no skipping',
                     f'{dyt:.3f} vs {full:.3f} '
                     f'({100 * (1 - dyt / full):.1f}% saved)'))
    width = max(len(name) for name, _ in rows)
    value_width = max(len(value) for _, value in rows)
    lines = [f'| {"metric".ljust(width)} | {"value".ljust(value_width)} |',
             f'|{"-" * (width + 2)}|{"-" * (value_width + 2)}|']
    lines += [f'| {name.ljust(width)} | {value.ljust(value_width)} |'
              for name, value in rows]
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> dict:
    args = parse_args(argv)
    demo = DEMOS[args.demo]
    work_dir = osp.join(REPO_ROOT, demo['work_dir'])
    os.makedirs(work_dir, exist_ok=True)
    python = sys.executable
    tools = osp.join(REPO_ROOT, 'tools')
    arch = demo.get('arch', 'vit')
    backbone = osp.join(args.data, f'demo_{arch}.pth')
    start = time.time()
    with open(osp.join(work_dir, 'demo.log'), 'a') as log:
        print(f'mmdyt {args.demo} demo: {demo["config"]} '
              f'(full output: {log.name})')
        stages = [
            ('generate the demo data', [
                python, osp.join(tools, 'demo', 'make_demo_data.py'),
                '--task', demo.get('data', args.demo), '--out', args.data
            ]),
            (f'pre-train the small demo {ARCH_NAMES[arch]} (stands in for a '
             'downloaded checkpoint)', [
                 python, osp.join(tools, 'demo', 'pretrain_demo_vit.py'),
                 '--arch', arch, '--out', backbone
             ]),
            ('adapt it frozen with DyT (tools/train.py)', [
                python, osp.join(tools, 'train.py'), demo['config'],
                '--work-dir', work_dir
            ]),
        ]
        total = len(stages) + 1 + int(demo.get('baseline', False))
        for index, (title, command) in enumerate(stages, 1):
            Stage(log, index, total, title).run(command)
        with open(osp.join(work_dir, 'last_checkpoint')) as file:
            checkpoint = file.read().strip()
        output = Stage(log, 4, total, 'evaluate it (tools/test.py)').run([
            python, osp.join(tools, 'test.py'), demo['config'], checkpoint,
            '--work-dir', osp.join(work_dir, 'test')
        ])
        baseline = None
        if demo.get('baseline'):
            baseline = val_summary(Stage(
                log, total, total, 'evaluate the model before training '
                '(the untrained baseline)').run([
                    python, osp.join(tools, 'train.py'), demo['config'],
                    '--work-dir', osp.join(work_dir, 'untrained'),
                    '--cfg-options', *BASELINE_OPTIONS
                ]))
    metrics = test_summary(output)
    minutes, seconds = divmod(round(time.time() - start), 60)
    name = osp.relpath(checkpoint, REPO_ROOT)
    print(f'\n=== {args.demo} demo results ({name}) ===')
    print(results_table(metrics, demo['metrics'], baseline))
    print(f'\n{minutes} min {seconds} s in all')
    return metrics


if __name__ == '__main__':
    main()
