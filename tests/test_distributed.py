"""Distributed training on CPUs (gloo): tools/dist_train.sh with 2 processes.

Data parallelism must be invisible in the result: 2 processes x batch b
train the same model as 1 process x batch 2b. What differs between the two
runs, and how this test makes the comparison exact:

- Data order: InfiniteSampler gives rank r the items r, r + 2, ... of the
  same shuffled order, so each iteration's global batch holds the same images
  as the 1-process batch. Random flips are turned off (the processes draw the
  same flips for different images).
- BatchNorm: per-process batch statistics (SyncBN needs GPUs) differ from
  whole-batch statistics, so the heads use GroupNorm here (per sample).
- Dropout (adapters, heads) is off; drop-path is off in the demo.
- Gumbel noise: drawn per process (same seed on every rank), so the samples
  get other noise than in one process. The comparison run replaces it with
  the noise-free decision ``score > 0`` (test helper), and sets the rate
  weight to 0: the rate loss is a square of each process's batch mean, as in
  the paper's DDP code, not of the global batch's.
- SGD: an update linear in the gradient, so float rounding (the order of
  the gradient sums differs: two half-batch sums averaged by all-reduce vs
  one sum) stays at float precision instead of Adam's sign-like first steps.

Tolerance: the parameter change of 3 SGD steps must agree within 1e-3 of its
norm. Measured: 1e-8 to 5e-7 after the first step (float rounding of the
gradient sums); 1e-5 (heads) to 2e-4 (dispatchers) after 2 and 3 steps, as
the hard dispatch decisions and the straight-through gradients (sums with
much cancellation) amplify it. A wrong split (one process's half batch alone)
is off by 13% (heads) to 89% (dispatchers); the test asks for > 5%.

A second run with the real Gumbel noise and rate loss checks that every
trainable parameter stays identical across the two processes, and
tools/dist_test.sh reports what one process reports.
"""
import os
import os.path as osp
import socket
import subprocess
import sys

import pytest
import torch

from helpers import REPO_ROOT, parse_metrics, run_tool_here, work_dir_log

CONFIG = osp.join(REPO_ROOT, 'configs/demo/seg_demo.py')
TESTS = osp.dirname(osp.abspath(__file__))
ITERS = 3

DERIVED = '''
_base_ = [{config!r}]
custom_imports = dict(imports=['mmdyt', 'dist_check_helpers'],
                      allow_failed_imports=False)
gn = dict(type='GN', num_groups=8, requires_grad=True)
model = dict(
    backbone=dict(init_cfg=dict(checkpoint={vit!r}),
                  adapter_cfg=dict(dropout=0.0)),
    neck=dict(norm_cfg=gn),
    decode_head=dict(norm_cfg=gn, dropout_ratio=0.0),
    auxiliary_head=dict(norm_cfg=gn, dropout_ratio=0.0),
    dyt_loss=dict(rate_weight={rate_weight}))
train_dataloader = dict(
    batch_size={batch}, num_workers=0, persistent_workers=False,
    sampler=dict(seed=0),
    dataset=dict(data_root={root!r}, pipeline=[
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', reduce_zero_label=True),
        dict(type='PackSegInputs')]))
val_dataloader = dict(num_workers=0, persistent_workers=False,
                      dataset=dict(data_root={root!r}))
test_dataloader = val_dataloader
optim_wrapper = dict(_delete_=True, type='OptimWrapper',
                     optimizer=dict(type='SGD', lr=0.05, momentum=0.9))
param_scheduler = []
train_cfg = dict(max_iters={iters}, val_interval=1000)
default_hooks = dict(checkpoint=dict(interval=1000),
                     logger=dict(interval=1))
custom_hooks = [dict(type='DispatchStatsHook'),
                dict(type='SaveRankStateHook', noise_free={noise_free})]
'''


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    from demo_vit import build_demo_vit
    from seg_demo_data import make_seg_demo
    root = tmp_path_factory.mktemp('dist')
    make_seg_demo(str(root / 'seg'), splits=dict(training=12, validation=4))
    torch.manual_seed(0)
    torch.save(build_demo_vit().state_dict(), root / 'vit.pth')
    return root


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def run_tool(tool, procs, *args):
    """Run ``tools/<tool>.py`` in 1 process or ``tools/dist_<tool>.sh``."""
    env = dict(os.environ, PYTHONPATH=TESTS, PYTHON=sys.executable,
               PORT=str(_free_port()), OMP_NUM_THREADS='1')
    if procs > 1:
        # dist_test.sh takes CONFIG CHECKPOINT GPUS, dist_train.sh CONFIG GPUS
        head = 2 if tool == 'test' else 1
        command = ['bash', osp.join(REPO_ROOT, f'tools/dist_{tool}.sh'),
                   *args[:head], str(procs), *args[head:]]
    else:  # in this process: no interpreter start-up
        run_tool_here(f'{tool}.py', *args)
        work_dir = args[args.index('--work-dir') + 1]
        return work_dir_log(work_dir)
    result = subprocess.run(
        command, capture_output=True, text=True, cwd=REPO_ROOT, env=env,
        timeout=300)
    log = result.stderr + result.stdout  # the test summary is printed last
    assert result.returncode == 0, log[-4000:]
    return log


def write_config(data, work_dir, batch, noise_free=True, rate_weight=0.0):
    os.makedirs(work_dir)
    config = osp.join(work_dir, 'cfg.py')
    with open(config, 'w') as f:
        f.write(DERIVED.format(
            config=CONFIG, vit=str(data / 'vit.pth'),
            root=str(data / 'seg'), batch=batch, iters=ITERS,
            noise_free=noise_free, rate_weight=rate_weight))
    return config


def train(data, work_dir, procs, batch, noise_free=True, rate_weight=0.0):
    """Train the derived demo config; return each rank's saved state."""
    config = write_config(data, work_dir, batch, noise_free, rate_weight)
    log = run_tool('train', procs, config, '--work-dir', work_dir,
                   '--no-validate')
    assert f'Iter(train) [{ITERS}/{ITERS}]' in log
    return [
        torch.load(osp.join(work_dir, f'rank{r}.pth')) for r in range(procs)
    ], log


def relative_change_error(run, reference, keys):
    """``||d_run - d_ref|| / ||d_ref||`` of the parameter changes ``d``."""
    diff = torch.cat([((run['final'][k] - run['initial'][k]) -
                       (reference['final'][k] - reference['initial'][k])
                       ).flatten() for k in keys])
    change = torch.cat([(reference['final'][k] - reference['initial'][k]
                         ).flatten() for k in keys])
    assert change.norm() > 0, f'{keys[:2]}... did not train'
    return float(diff.norm() / change.norm())


GROUPS = {
    'dispatchers': '_dispatcher.',
    'adapters': '_adapter.',
    'neck and heads': ('neck.', 'decode_head.', 'auxiliary_head.'),
}


def _group(state, pattern):
    if isinstance(pattern, tuple):
        return [k for k in state['final'] if k.startswith(pattern)]
    return [k for k in state['final'] if pattern in k]


def test_two_processes_train_like_one_with_the_whole_batch(data, tmp_path):
    (rank0, rank1), log = train(data, str(tmp_path / 'ddp'), 2, 2)
    assert 'Distributed training: True' in log
    (single, ), _ = train(data, str(tmp_path / 'single'), 1, 4)
    (half, ), _ = train(data, str(tmp_path / 'half'), 1, 2)
    for name, pattern in GROUPS.items():
        keys = _group(single, pattern)
        assert keys, name
        error = relative_change_error(rank0, single, keys)
        assert error < 1e-3, f'{name}: DDP vs 1 process differ by {error}'
        # the test can tell: rank 0's half of the batch alone trains
        # differently (by 13% to 89%)
        control = relative_change_error(half, single, keys)
        assert control > 0.05, f'{name}: half batch too close ({control})'
        for key in keys:  # and the replicas are in sync
            assert torch.equal(rank0['final'][key], rank1['final'][key])


@pytest.fixture(scope='module')
def gumbel_run(data, tmp_path_factory):
    """2 processes, the real Gumbel noise and rate loss."""
    work_dir = str(tmp_path_factory.mktemp('gumbel') / 'ddp')
    states, log = train(
        data, work_dir, 2, 2, noise_free=False, rate_weight=2.0)
    return work_dir, states, log


def test_replicas_stay_identical_with_gumbel_noise_and_rate_loss(gumbel_run):
    _, (rank0, rank1), log = gumbel_run
    assert 'loss_rate' in log
    keys = list(rank0['final'])
    assert any('_dispatcher.' in k for k in keys)
    assert any('_adapter.' in k for k in keys)
    for key in keys:
        assert not torch.equal(rank0['final'][key],
                               rank0['initial'][key]), f'{key} did not train'
        assert torch.equal(rank0['final'][key], rank1['final'][key]), key


def test_dist_test_reports_what_one_process_reports(gumbel_run, tmp_path):
    work_dir, _, _ = gumbel_run
    config = osp.join(work_dir, 'cfg.py')
    checkpoint = osp.join(work_dir, f'iter_{ITERS}.pth')
    dist = run_tool('test', 2, config, checkpoint, '--work-dir',
                    str(tmp_path / 'dist'))
    single = run_tool_here('test.py', config, checkpoint, '--work-dir',
                           str(tmp_path / 'single'))
    assert dist.count('=== test results ===') == 1  # rank 0 prints
    assert parse_metrics(dist) == single
    assert {'mIoU', 'act_rate'} <= set(single)


SRUN = '''#!/usr/bin/env bash
# stand-in srun: records its arguments, then runs the command as task 0 of 1
printf '%s\\n' "$@" > "$SRUN_RECORD"
while [ $# -gt 0 ] && [ "$1" != "$PYTHON" ]; do shift; done
SLURM_PROCID=0 SLURM_NTASKS=1 SLURM_LOCALID=0 SLURM_NODELIST=node[1-2] \\
    exec "$@"
'''

SCONTROL = '''#!/usr/bin/env bash
# stand-in scontrol: the hosts of a node list
echo "$@" >> "$SRUN_RECORD.scontrol"
printf '127.0.0.1\\nnode2\\n'
'''


def run_slurm(tool, tmp_path, *args, **env_vars):
    """Run ``tools/slurm_<tool>.sh`` with stand-in ``srun`` and ``scontrol``
    on PATH; return the log and srun's arguments."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir(exist_ok=True)
    for name, text in (('srun', SRUN), ('scontrol', SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    record = tmp_path / f'srun_{tool}.txt'
    env = dict(os.environ, PYTHONPATH=TESTS, PYTHON=sys.executable,
               MASTER_PORT=str(_free_port()), OMP_NUM_THREADS='1',
               PATH=f'{bin_dir}:{os.environ["PATH"]}',
               SRUN_RECORD=str(record), **env_vars)
    env.pop('MASTER_ADDR', None)
    result = subprocess.run(
        ['bash', osp.join(REPO_ROOT, f'tools/slurm_{tool}.sh'), *args],
        capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=300)
    log = result.stderr + result.stdout
    assert result.returncode == 0, log[-4000:]
    return log, record.read_text().splitlines()


def test_slurm_scripts_pass_srun_the_mmseg_options(data, gumbel_run,
                                                   tmp_path):
    """tools/slurm_train.sh and slurm_test.sh call srun as mmseg's do
    (GPUS, GPUS_PER_NODE, CPUS_PER_TASK, SRUN_ARGS), and the launched
    process sets up torch.distributed from srun's environment: it trains,
    and tests to what one process reports."""
    work_dir = str(tmp_path / 'slurm')
    config = write_config(data, work_dir, 2)
    log, srun = run_slurm(
        'train', tmp_path, 'part1', 'dyt', config, '--work-dir', work_dir,
        '--no-validate', GPUS='8', GPUS_PER_NODE='4', CPUS_PER_TASK='3',
        SRUN_ARGS='--quotatype=auto --time=10')
    command = srun.index(sys.executable)
    assert srun[:command] == [
        '-p', 'part1', '--job-name=dyt', '--gres=gpu:4', '--ntasks=8',
        '--ntasks-per-node=4', '--cpus-per-task=3', '--kill-on-bad-exit=1',
        '--quotatype=auto', '--time=10']
    assert srun[command + 2:command + 4] == [
        osp.join(REPO_ROOT, 'tools/train.py'), config]
    assert '--launcher=slurm' in srun
    assert 'Distributed training: True' in log
    assert f'Iter(train) [{ITERS}/{ITERS}]' in log
    # the master is the first host of the node list
    assert (tmp_path / 'srun_train.txt.scontrol').read_text().split() == [
        'show', 'hostname', 'node[1-2]']

    trained, _, _ = gumbel_run
    checkpoint = osp.join(trained, f'iter_{ITERS}.pth')
    cfg = osp.join(trained, 'cfg.py')
    log, srun = run_slurm('test', tmp_path, 'part1', 'eval', cfg, checkpoint,
                          '--work-dir', str(tmp_path / 'slurm_test'),
                          GRES='')
    assert not any(arg.startswith('--gres') for arg in srun)
    assert srun[srun.index(sys.executable) + 2:][:3] == [
        osp.join(REPO_ROOT, 'tools/test.py'), cfg, checkpoint]
    single = run_tool_here('test.py', cfg, checkpoint, '--work-dir',
                           str(tmp_path / 'single'))
    assert parse_metrics(log) == single
