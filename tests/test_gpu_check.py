"""tools/analysis_tools/gpu_check.sh runs end to end on the CPU (its device
argument): the device tests pass and the speed table is written, each row
naming its device and holding the low-precision ratios."""
import json
import os
import subprocess
import sys

from helpers import REPO_ROOT


def test_gpu_check_script_runs_on_cpu(tmp_path):
    out = tmp_path / 'gpu_check'
    env = dict(os.environ, PY=sys.executable, COMPILE_BACKEND='eager')
    result = subprocess.run(
        ['bash', 'tools/analysis_tools/gpu_check.sh', 'cpu', str(out),
         '--arch', 'tiny', '--img-size', '32', '--batch', '2', '--rate',
         '0.5', '--warmup', '1', '--repeats', '2', '--threads', '1'],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert ' passed' in (out / 'tests.log').read_text()
    (row, ) = json.loads((out / 'speed_bfloat16.json').read_text())
    assert row['device'] == 'cpu' and row['amp_dtype'] == 'bfloat16'
    for key in ('dyt_bf16_vs_best_dense_bf16', 'dyt_bf16_vs_amp_today',
                'dyt_bf16_compiled_vs_best_dense_bf16', 'speedup'):
        assert row[key] > 0, key
    # a CPU has no host synchronisations to count; a float16 table is for
    # GPUs only
    assert 'dyt_host_syncs' not in row
    assert not (out / 'speed_float16.json').exists()


def test_gpu_check_script_refuses_cuda_without_a_gpu(tmp_path):
    import pytest
    import torch
    if torch.cuda.is_available():
        pytest.skip('this machine has CUDA')
    result = subprocess.run(
        ['bash', 'tools/analysis_tools/gpu_check.sh', 'cuda',
         str(tmp_path)], cwd=REPO_ROOT, capture_output=True, text=True,
        env=dict(os.environ, PY=sys.executable))
    assert result.returncode != 0
    assert 'CUDA is not available' in result.stderr
