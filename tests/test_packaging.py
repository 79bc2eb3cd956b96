"""Packaging: mmdyt declares ranges and installs into an existing OpenMMLab
environment without touching its torch, torchvision or mmcv."""
import json
import os.path as osp
import re
import subprocess
import sys

from mmengine.utils import digit_version

from helpers import REPO_ROOT

#: What an OpenMMLab GPU environment is built around: pip must keep them.
KEPT = {'torch', 'torchvision', 'mmcv', 'mmcv-lite'}


def _requirements(name):
    with open(osp.join(REPO_ROOT, 'requirements', f'{name}.txt')) as f:
        return [line.split('#')[0].strip() for line in f
                if line.split('#')[0].strip()]


def test_requirements_are_ranges_and_pins_live_in_constraints():
    for name in ('runtime', 'tests', 'deploy', 'mminstall', 'mmcv_lite',
                 'docs'):
        for line in _requirements(name):
            assert '==' not in line, f'requirements/{name}.txt pins {line}'
    pinned = {}
    for stack in ('newest', 'oldest'):
        for line in _requirements(osp.join('constraints', stack)):
            package, version = line.split('==')
            pinned.setdefault(stack, {})[package.lower()] = version
    # the two stacks are the two ends of the declared torch range
    assert pinned['oldest']['torch'].startswith('2.1.')
    assert digit_version(pinned['newest']['torch']) > digit_version(
        pinned['oldest']['torch'])
    runtime = ' '.join(_requirements('runtime'))
    assert re.search(r'\btorch>=2\.1\b', runtime)


def test_pip_install_keeps_the_environments_torch_and_mmcv(tmp_path):
    """``pip install -e .`` into this environment (either tested stack)
    would install nothing of torch, torchvision or mmcv."""
    report = tmp_path / 'report.json'
    result = subprocess.run(
        [sys.executable, '-m', 'pip', 'install', '--dry-run', '--quiet',
         '--no-build-isolation', '--disable-pip-version-check', '--report',
         str(report), '-e', REPO_ROOT],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    would_install = {
        item['metadata']['name'].lower()
        for item in json.loads(report.read_text())['install']
    }
    assert would_install & KEPT == set(), would_install
    assert would_install <= {'mmdyt'}, would_install  # all else present


def _pins(stack):
    return dict(
        line.lower().split('==')
        for line in _requirements(osp.join('constraints', stack)))


def test_the_install_docs_name_the_tested_versions():
    """The version table of docs/en/get_started.md shows what the
    constraints files pin, so that the two cannot drift apart."""
    rows = {
        'torch / torchvision': ['torch', 'torchvision'],
        'numpy': ['numpy'],
        'mmengine': ['mmengine'],
        'mmsegmentation': ['mmsegmentation'],
        'mmdet': ['mmdet'],
        'mmaction2': ['mmaction2'],
        'timm': ['timm'],
    }
    with open(osp.join(REPO_ROOT, 'docs/en/get_started.md')) as f:
        table = {
            cells[1].strip(): cells[3:5]
            for cells in (line.split('|') for line in f)
            if len(cells) > 5
        }
    version = re.compile(r'\d+(?:\.\d+)+')
    for row, packages in rows.items():
        for cell, stack in zip(table[row], ('oldest', 'newest')):
            pins = _pins(stack)
            assert version.findall(cell) == [pins[p] for p in packages], (
                row, stack)


def test_the_install_docs_name_the_torch_each_feature_needs():
    """Each feature's torch in ``TORCH_FEATURES`` is the one the docs'
    feature table states."""
    from mmdyt.utils.torch_compat import TORCH_FEATURES
    with open(osp.join(REPO_ROOT, 'docs/en/get_started.md')) as f:
        stated = set(re.findall(r'\| torch ≥ (\d+\.\d+) \(', f.read()))
    needed = {'.'.join(v.split('.')[:2]) for v in TORCH_FEATURES.values()}
    assert stated == needed
