"""Render ``benchmarks/results.yml`` into the markdown pages.

``benchmarks/results.yml`` is the one source of the figures that more than
one page shows (the demos, the ``make`` and CI timings, the whole-model
savings). A page shows a block of them between two markers::

    <!-- results:demos -->
    ...rendered here...
    <!-- /results -->

Running this script rewrites every such block in ``README.md``,
``configs/README.md`` and ``docs/en/**/*.md`` from the results file. With
``--check`` it writes nothing and exits with status 1 if any block differs
from its rendering (``tests/test_docs.py`` runs the check).

Example:
    python tools/misc/render_results.py            # update the pages
    python tools/misc/render_results.py --check    # CI: are they current?
"""
import argparse
import glob
import json
import os.path as osp
import re
import sys
from typing import Callable, Dict, List

import yaml

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
RESULTS = osp.join('benchmarks', 'results.yml')
BLOCK = re.compile(
    r'(<!-- results:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /results -->)',
    re.S)
SOURCE = ('Source: `benchmarks/results.yml`, which names each figure\'s '
          'command, machine and commit.')


def _table(header: List[str], rows: List[List[str]],
           numeric: bool = False) -> List[str]:
    """A markdown table; with ``numeric``, the columns after the first are
    right-aligned."""
    rule = '---:|' if numeric else '---|'
    lines = ['| ' + ' | '.join(header) + ' |',
             '|---|' + rule * (len(header) - 1)]
    lines += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
    return lines


def _quickstart(results: dict) -> List[str]:
    timings = results['timings']
    return [
        '```bash',
        f"make demo   # sets everything up, trains DyT on generated data "
        f"and evaluates it ({timings['make_demo']['approx']})",
        f"make test   # sets everything up, then runs the test suite "
        f"({timings['make_test']['approx']})",
        '```',
    ]


def _demos(results: dict) -> List[str]:
    rows = []
    for key in ('seg', 'video', 'det', 'swin'):
        demo = results['demos'][key]
        rows.append([
            f"`{demo['command']}`: {demo['title']}",
            demo['metric'],
            f"**{demo['dyt']}**",
            demo['adapter_only']['value'],
            demo['rate'],
            f"{demo['gflops_complete']} → {demo['gflops_dyt']} "
            f"(−{demo['saved']})",
            demo['time'],
            f"{demo['machine']}, `{demo['commit']}`",
        ])
    return _table(
        ['demo', 'metric', 'DyT', 'adapter-only (or untrained)',
         'activation rate (r = 0.5)',
         'backbone GFLOPs, no skipping → DyT', 'time', 'machine, commit'],
        rows) + ['', SOURCE]


def _learning(results: dict) -> List[str]:
    rows = []
    for key in ('seg', 'video', 'segmenter', 'swin', 'det'):
        demo = results['demos'][key]
        rows.append([
            demo['title'], demo['test_set'], demo['metric'],
            demo['adapter_only']['value'], demo['dyt'], demo['rate'],
            f"{demo['gflops_complete']} → {demo['gflops_dyt']} "
            f"(−{demo['saved']})",
            f"{demo['machine']}, `{demo['commit']}`",
        ])
    return _table(
        ['task', 'test set', 'metric', 'adapter-only (or untrained)',
         'DyT (r = 0.5)', "DyT's measured rate",
         'backbone GFLOPs, no skipping → DyT', 'machine, commit'],
        rows) + ['', SOURCE]


def _ci(results: dict) -> List[str]:
    timings = results['timings']
    rows = [[f"`{timings[key]['command']}`", timings[key]['measured'],
             f"{timings[key]['machine']}, `{timings[key]['commit']}`"]
            for key in ('make_demo', 'make_test', 'ci')]
    rows.append(['of which the oldest stack (`make test-oldest`)',
                 timings['ci']['oldest'], ''])
    return _table(['command', 'measured', 'machine, commit'],
                  rows) + ['', SOURCE]


def _threshold(results: dict) -> List[str]:
    entry = results['threshold']
    rows = [[r['threshold'], r['rate'], r['gflops'], r['miou']]
            for r in entry['rows']]
    return _table(['eval threshold', 'activation rate',
                   'backbone GFLOPs per image', 'mIoU'], rows) + [
        '',
        f"The model of `make demo` on the {entry['machine']} (commit "
        f"`{entry['commit']}`): 0.5, the default, as `make demo` tests "
        f"it; 0.6 with `{entry['command']}`. {SOURCE}"]


def _whole_models(results: dict) -> List[str]:
    entry = results['whole_models']
    rows = [[r['model'], r['flops_saved'], r['latency_saved']]
            for r in entry['rows']]
    return _table(['model (r = 0.5)', 'FLOPs saved', 'latency saved'],
                  rows) + [
        '',
        f"DyT against its adapter-only twin, `{entry['command']}` on the "
        f"{entry['machine']} (run at commit `{entry['run_at']}`, entered at "
        f"`{entry['commit']}`). {SOURCE}"]


def _parameters(results: dict, root: str) -> List[str]:
    entry = results['parameters']
    rows = []
    for row in entry['rows']:
        with open(osp.join(root, 'benchmarks', row['json']),
                  encoding='utf-8') as f:
            params = json.load(f)['params']
        (model, model_trainable), (backbone, backbone_trainable) = (
            params['model'], params['backbone'])
        trainable = f'{backbone_trainable / 1e6:.3f}M'
        rows.append([
            row['label'], f'{model / 1e6:.2f}M',
            f'{model_trainable / 1e6:.2f}M', f'{backbone / 1e6:.2f}M',
            f'**{trainable}**' if row['dyt'] else trainable])
    return _table(['model (config)', 'model: total', 'model: trainable',
                   'backbone: total', 'backbone: trainable'], rows,
                  numeric=True) + [
        '',
        f"Each row is the `params` of `benchmarks/<json>`, written by "
        f"`{entry['command']}`; `benchmarks/results.yml` names the file of "
        "each row."]


def _flops_table(results: dict, root: str, name: str) -> List[str]:
    """A recipe family's FLOPs by part (``flops_tables.<name>``)."""
    spec = results['flops_tables'][name]
    cache = {}

    def gflops(column, part):
        if column['json'] not in cache:
            with open(osp.join(root, 'benchmarks', column['json']),
                      encoding='utf-8') as f:
                cache[column['json']] = json.load(f)['gflops']
        return cache[column['json']][part][column['key']]

    columns = spec['columns']
    rows = []
    for row in spec['rows']:
        bold = row.get('bold', False)
        cells = [f"**{row['title']}**" if bold else row['title']]
        for column in columns:
            value = gflops(column, row['part'])
            cell = f'{value:.2f}'
            if bold and column.get('bold'):
                cell = f'**{cell}**'
            if row.get('saving') and 'saving_vs' in column:
                base = gflops(columns[column['saving_vs']], row['part'])
                cell += f' (−{100 * (1 - value / base):.1f}%)'
            cells.append(cell)
        rows.append(cells)
    files = sorted({f"`benchmarks/{c['json']}`" for c in columns})
    return _table(['part'] + [c['title'] for c in columns], rows,
                  numeric=True) + [
        '', 'GFLOPs per sample, from ' + ', '.join(files) + '.']


def _flops_recipes(results: dict, root: str) -> List[str]:
    """One row per recipe (``flops_recipes``): backbone and whole model."""

    def gflops(name):
        with open(osp.join(root, 'benchmarks', name), encoding='utf-8') as f:
            return json.load(f)['gflops']

    rows = []
    files = []
    for row in results['flops_recipes']:
        dyt = gflops(row['json'])
        files.append(row['json'])
        adapter = '–'
        saving = ''
        if row.get('adapter_json'):
            files.append(row['adapter_json'])
            complete = gflops(row['adapter_json'])['backbone']['complete']
            adapter = f'{complete:.2f}'
            ratio = dyt['backbone']['dyt'] / complete
            saving = f' (−{100 * (1 - ratio):.1f}%)'
        whole = dyt[row['whole']]
        rows.append([
            row['title'], row['input'], f"{dyt['backbone']['dense']:.2f}",
            adapter, f"{dyt['backbone']['dyt']:.2f}{saving}",
            f"{whole['dense']:.2f} → {whole['dyt']:.2f}"])
    lines = _table(['recipe', 'input', 'backbone: dense', 'adapter-only',
                    'DyT @ r = 0.5',
                    'whole model (inference): dense → DyT'], rows,
                   numeric=True)
    return lines + ['', 'GFLOPs per sample, from ' + ', '.join(
        f'`benchmarks/{name}`' for name in files) + '.']


#: The blocks a page can show, by marker name.
RENDERERS: Dict[str, Callable[..., List[str]]] = {
    'quickstart': _quickstart,
    'demos': _demos,
    'learning': _learning,
    'ci': _ci,
    'threshold': _threshold,
    'whole-models': _whole_models,
    'parameters': _parameters,
    'flops-recipes': _flops_recipes,
}
#: The blocks that also read the JSON files under ``benchmarks/``.
READS_FILES = {'parameters', 'flops-recipes'}


def load_results(root: str = REPO_ROOT) -> dict:
    """Read ``benchmarks/results.yml`` under ``root``."""
    with open(osp.join(root, RESULTS), encoding='utf-8') as f:
        return yaml.safe_load(f)


def pages(root: str = REPO_ROOT) -> List[str]:
    """The markdown pages that may hold result blocks, relative to root."""
    found = ['README.md', osp.join('configs', 'README.md')]
    found += sorted(
        osp.relpath(p, root)
        for p in glob.glob(osp.join(root, 'docs', 'en', '**', '*.md'),
                           recursive=True))
    return [p for p in found if osp.isfile(osp.join(root, p))]


def render_text(text: str, results: dict, root: str = REPO_ROOT) -> str:
    """``text`` with every result block rendered from ``results`` (and,
    for some blocks, the JSON files under ``root``'s ``benchmarks/``).

    Raises:
        KeyError: A marker names a block that has no renderer.
    """

    def fill(match):
        name = match.group('name')
        if name.startswith('flops-') and name not in RENDERERS:
            body = '\n'.join(_flops_table(results, root, name[6:])) + '\n'
            return match.group(1) + body + match.group(4)
        if name not in RENDERERS:
            raise KeyError(f'unknown results block {name!r}; known: '
                           f'{sorted(RENDERERS)}')
        if name in READS_FILES:
            lines = RENDERERS[name](results, root)
        else:
            lines = RENDERERS[name](results)
        body = '\n'.join(lines) + '\n'
        return match.group(1) + body + match.group(4)

    return BLOCK.sub(fill, text)


def check(root: str = REPO_ROOT) -> List[str]:
    """The pages whose result blocks differ from their rendering."""
    results = load_results(root)
    stale = []
    for page in pages(root):
        with open(osp.join(root, page), encoding='utf-8') as f:
            text = f.read()
        if render_text(text, results, root) != text:
            stale.append(page)
    return stale


def render(root: str = REPO_ROOT) -> List[str]:
    """Rewrite every page's result blocks; returns the pages changed."""
    results = load_results(root)
    changed = []
    for page in pages(root):
        path = osp.join(root, page)
        with open(path, encoding='utf-8') as f:
            text = f.read()
        new = render_text(text, results, root)
        if new != text:
            with open(path, 'w', encoding='utf-8') as f:
                f.write(new)
            changed.append(page)
    return changed


def main(argv=None) -> int:
    """Command line: render the pages, or ``--check`` them."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--check', action='store_true',
        help='write nothing; exit 1 if a page differs from the rendering')
    args = parser.parse_args(argv)
    if args.check:
        stale = check()
        for page in stale:
            print(f'{page}: results blocks differ from {RESULTS}; run '
                  'python tools/misc/render_results.py')
        return 1 if stale else 0
    for page in render():
        print(f'rendered {page}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
