"""The documentation: links of the pages MkDocs does not build, and the
figures rendered from ``benchmarks/results.yml``.

``make docs`` builds ``docs/en`` with MkDocs in strict mode, which fails on
a broken link or anchor there. ``README.md`` and ``configs/README.md`` lie
outside its ``docs_dir``, so their relative links are checked here. External
(http, https, mailto) links are not checked: CI has no network.
"""
import json
import os.path as osp
import re

import pytest

from helpers import REPO_ROOT

#: The markdown pages outside MkDocs' docs_dir.
PAGES = ['README.md', osp.join('configs', 'README.md')]
#: ``[text](target)`` and ``![alt](target)``; the target ends at a space
#: (a title) or the closing parenthesis.
LINK = re.compile(r'!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)')
FENCE = re.compile(r'^(```|~~~).*?^\1', re.S | re.M)
EXTERNAL = ('http://', 'https://', 'mailto:')


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, markup and
    punctuation dropped, spaces turned into hyphens."""
    text = re.sub(r'\[([^\]]*)\]\([^)]*\)', r'\1', heading)  # link text
    text = text.strip().lower()
    text = re.sub(r'[^\w\- ]', '', text)
    return text.replace(' ', '-')


def anchors(path: str) -> set:
    """The GitHub anchors of a markdown file's headings (duplicates get
    ``-1``, ``-2``... as on GitHub)."""
    with open(path, encoding='utf-8') as f:
        text = FENCE.sub('', f.read())
    seen = {}
    found = set()
    for line in text.splitlines():
        match = re.match(r'#{1,6}\s+(.*?)\s*#*\s*$', line)
        if not match:
            continue
        slug = github_slug(match.group(1))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f'{slug}-{count}')
    return found


def links(page: str) -> list:
    """The link targets of a page, outside code blocks."""
    with open(osp.join(REPO_ROOT, page), encoding='utf-8') as f:
        text = FENCE.sub('', f.read())
    return LINK.findall(text)


def test_github_slug_matches_githubs_rules():
    assert github_slug('What is and is not verified') == \
        'what-is-and-is-not-verified'
    assert github_slug("DyT in an existing `mmseg` config") == \
        'dyt-in-an-existing-mmseg-config'
    assert github_slug('Multi-GPU, multi-node runs') == \
        'multi-gpu-multi-node-runs'


@pytest.mark.parametrize('page', PAGES)
def test_relative_links_point_to_files_and_headings(page):
    base = osp.dirname(osp.join(REPO_ROOT, page))
    checked = 0
    for target in links(page):
        if target.startswith(EXTERNAL):
            continue  # not checkable without network
        path, _, anchor = target.partition('#')
        full = osp.normpath(osp.join(base, path)) if path else osp.join(
            REPO_ROOT, page)
        assert osp.exists(full), f'{page}: {target} does not exist'
        if anchor and full.endswith('.md'):
            assert anchor in anchors(full), (
                f'{page}: {target}: no heading with anchor #{anchor}')
        checked += 1
    assert checked, f'{page} has no relative links to check'


def test_broken_links_are_found(tmp_path):
    """The check itself: a missing file and a missing anchor are caught."""
    page = tmp_path / 'page.md'
    page.write_text('# Title\n\n[a](page.md#title) [b](page.md#nope)\n'
                    '```\n[c](in-code.md)\n```\n', encoding='utf-8')
    assert anchors(str(page)) == {'title'}
    with open(page, encoding='utf-8') as f:
        text = FENCE.sub('', f.read())
    assert LINK.findall(text) == ['page.md#title', 'page.md#nope']


def test_rendered_results_are_current():
    """Every results block of the pages is what ``render_results.py``
    renders from ``benchmarks/results.yml``."""
    import render_results
    assert render_results.check() == []


def test_render_results_renders_every_block():
    import render_results
    results = render_results.load_results()
    names = list(render_results.RENDERERS) + [
        f'flops-{name}' for name in results['flops_tables']]
    for name in names:
        text = f'<!-- results:{name} -->\nSTALE\n<!-- /results -->\n'
        rendered = render_results.render_text(text, results)
        assert 'STALE' not in rendered, name
        assert len(rendered) > len(text), name
    with pytest.raises(KeyError):
        render_results.render_text(
            '<!-- results:nope -->\n<!-- /results -->', results)


# ------------------------------------------------------------ model zoo
#: A model-zoo row: its config, then the backbone GFLOPs, model GFLOPs and
#: parameter cells (the 6th to 8th columns of the recipe tables).
ZOO_ROW = re.compile(r'^\| \[`configs/(?P<task>[^/`]+)/(?P<name>[^`]+)\.py`\]'
                     r'(?:[^|]*\|){5}(?P<backbone>[^|]*)\|(?P<model>[^|]*)\|'
                     r'(?P<params>[^|]*)\|', re.M)


def zoo_rows() -> list:
    with open(osp.join(REPO_ROOT, 'configs', 'README.md'),
              encoding='utf-8') as f:
        return list(ZOO_ROW.finditer(f.read()))


def zoo_cells(flops: dict) -> tuple:
    """The model zoo's GFLOPs and parameter cells of a ``get_flops.py``
    JSON: the backbone and the inference model (backbone + pyramid for a
    detector) at the DyT rates, trainable / total parameters."""
    gflops = flops['gflops']
    model = gflops.get('whole model', gflops.get('backbone + neck'))

    def count(name):
        total, trainable = flops['params'][name]
        return f'{trainable / 1e6:.2f}M / {total / 1e6:.2f}M'

    return (f"{gflops['backbone']['dyt']:.2f}", f"{model['dyt']:.2f}",
            f"backbone {count('backbone')}<br>model {count('model')}")


def test_the_model_zoo_states_the_benchmark_json_figures():
    """Every GFLOPs and parameter figure of the model zoo is the one its
    ``benchmarks/flops_<task>_<config>.json`` holds; a row without that
    file shows "—"."""
    rows = zoo_rows()
    assert len(rows) >= 15
    checked = 0
    for row in rows:
        path = osp.join(REPO_ROOT, 'benchmarks',
                        f"flops_{row['task']}_{row['name']}.json")
        cells = tuple(re.sub(r'\s*\(\d+²\)', '', row[k]).strip()
                      for k in ('backbone', 'model', 'params'))
        if not osp.exists(path):
            assert cells == ('—', '—', '—'), row['name']
            continue
        with open(path) as f:
            assert cells == zoo_cells(json.load(f)), row['name']
        checked += 1
    assert checked >= 10
