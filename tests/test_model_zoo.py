"""configs/metafile.yml: every recipe it lists exists, builds, and has the
parameter counts the model-zoo page states; every recipe is listed."""
import glob
import json
import os.path as osp
import re

import pytest
import torch
import yaml
from mmengine.config import Config
from mmengine.registry import init_default_scope

from helpers import REPO_ROOT
from mmdyt.registry import library_registry

METAFILE = osp.join(REPO_ROOT, 'configs', 'metafile.yml')


def metafile_models():
    with open(METAFILE) as file:
        meta = yaml.safe_load(file)
    collections = {c['Name'] for c in meta['Collections']}
    for model in meta['Models']:
        assert model['In Collection'] in collections, model['Name']
    return meta['Models']


def test_every_recipe_is_listed_once():
    listed = [m['Config'] for m in metafile_models()]
    assert len(listed) == len(set(listed))
    recipes = sorted(
        osp.relpath(p, REPO_ROOT)
        for p in glob.glob(osp.join(REPO_ROOT, 'configs', '*', '*.py'))
        if '/_base_/' not in p)
    assert sorted(listed) == recipes


@pytest.mark.parametrize('model', metafile_models(), ids=lambda m: m['Name'])
def test_listed_recipe_builds_with_the_stated_parameters(model):
    path = osp.join(REPO_ROOT, model['Config'])
    assert osp.isfile(path), path
    cfg = Config.fromfile(path)
    cfg.model.backbone.init_cfg = None  # nothing to download
    init_default_scope(cfg.default_scope)
    registry = library_registry(cfg.default_scope, 'MODELS')
    try:
        with torch.device('meta'):  # the real size, no memory, no init time
            built = registry.build(cfg.model)
    except RuntimeError as error:  # e.g. a head calling .item() at init
        if 'meta' not in str(error).lower():  # 'Meta' on torch 2.1
            raise
        built = registry.build(cfg.model)
    assert type(built).__name__ == cfg.model.type
    params = list(built.parameters())
    backbone = list(built.backbone.parameters())
    counts = {
        'Parameters': sum(p.numel() for p in params),
        'Trainable Parameters': sum(p.numel() for p in params
                                    if p.requires_grad),
        'Backbone Parameters': sum(p.numel() for p in backbone),
        'Backbone Trainable Parameters': sum(p.numel() for p in backbone
                                             if p.requires_grad),
    }
    stated = {k: v for k, v in model.get('Metadata', {}).items()
              if k in counts}
    for key, value in stated.items():
        assert counts[key] == value, (model['Name'], key)


def flops_json(config: str) -> str:
    """``benchmarks/flops_<task>_<name>.json`` of a recipe config."""
    task, name = config.split('/')[1:3]
    return osp.join(REPO_ROOT, 'benchmarks',
                    f'flops_{task}_{osp.splitext(name)[0]}.json')


def test_the_metafile_states_the_benchmark_json_figures():
    """The FLOPs and parameter counts of the model index are those of the
    recipe's ``get_flops.py`` JSON in ``benchmarks/`` (one source): the
    backbone and the inference model (backbone + pyramid for a detector)
    at the DyT rates."""
    checked = 0
    for model in metafile_models():
        path = flops_json(model['Config'])
        meta = model.get('Metadata', {})
        if not osp.exists(path):
            assert 'FLOPs' not in meta, model['Name']
            continue
        with open(path) as file:
            flops = json.load(file)
        gflops = flops['gflops']
        whole = gflops.get('whole model', gflops.get('backbone + neck'))
        expected = {
            'FLOPs': round(whole['dyt'] * 1e9),
            'Backbone FLOPs': round(flops['backbone']['dyt']),
            'Parameters': flops['params']['model'][0],
            'Trainable Parameters': flops['params']['model'][1],
            'Backbone Parameters': flops['params']['backbone'][0],
            'Backbone Trainable Parameters': flops['params']['backbone'][1],
        }
        assert {k: meta.get(k) for k in expected} == expected, model['Name']
        checked += 1
    assert checked >= 10


#: The paper cell of a model-zoo row: ``DyT: 39.78 / 36.11 (468.40
#: GFLOPs), Table 11``.
PAPER_CELL = re.compile(r'\| [^|:]+: (?P<metrics>[\d. /]+?)'
                        r'(?: \((?P<gflops>[\d.]+) GFLOPs\))?, '
                        r'(?P<table>Table \d+) \| `python')
#: The metafile's note on a paper result: ``(Table 10, DyT; 584.57 GFLOPs``.
PAPER_NOTE = re.compile(r"# the paper's reported numbers? \((?P<table>Table "
                        r'\d+)[^;)\n]*(?:; (?P<gflops>[\d.]+) GFLOPs)?')


def test_the_model_zoo_states_the_metafile_paper_results():
    """The paper's results in the model zoo's table are those the model
    index records for the recipe (its ``Results``, with the table and
    GFLOPs its note names): one source."""
    with open(osp.join(REPO_ROOT, 'configs', 'README.md')) as file:
        zoo = {line.split('`')[1]: line for line in file
               if line.startswith('| [`configs/')}
    with open(METAFILE) as file:
        models = file.read().split('\nModels:\n')[1]
    entries = models.split('\n  - Name: ')[1:]
    checked = 0
    for model, entry in zip(metafile_models(), entries):
        note = PAPER_NOTE.search(entry)
        cell = PAPER_CELL.search(zoo[model['Config']])
        assert (note is None) == (cell is None), model['Name']
        if note is None:
            continue
        metrics = [
            f'{value:.2f}' for result in model['Results']
            for value in result['Metrics'].values()
        ]
        assert cell['metrics'].split(' / ') == metrics, model['Name']
        assert (cell['table'], cell['gflops']) == (
            note['table'], note['gflops']), model['Name']
        checked += 1
    assert checked >= 10
