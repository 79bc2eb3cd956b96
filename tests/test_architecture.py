"""The package's structure: no import cycles, no tool code inside it."""
import ast
import os
import os.path as osp
from typing import Dict, List, Set

from helpers import REPO_ROOT

PACKAGE = osp.join(REPO_ROOT, 'mmdyt')


def module_name(path: str) -> str:
    relative = osp.relpath(path, REPO_ROOT)[:-len('.py')]
    parts = relative.split(os.sep)
    if parts[-1] == '__init__':
        parts = parts[:-1]
    return '.'.join(parts)


def package_modules() -> Dict[str, str]:
    """``mmdyt.x.y`` -> file, for every module of the package."""
    modules = {}
    for root, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith('.py'):
                path = osp.join(root, name)
                modules[module_name(path)] = path
    return modules


def imports_of(path: str, module: str, known: Set[str]) -> List[str]:
    """The package modules ``path`` imports, at module level and inside
    functions alike (``from . import x`` resolved)."""
    is_package = path.endswith('__init__.py')
    base = module.split('.') if is_package else module.split('.')[:-1]
    found = []
    for node in ast.walk(ast.parse(open(path).read())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                prefix = base[:len(base) - node.level + 1]
                source = '.'.join(prefix + ([node.module] if node.module
                                            else []))
            else:
                source = node.module or ''
            names = [source] + [f'{source}.{a.name}' for a in node.names]
        for name in names:
            # the module itself, or the package a name comes from
            while name and name not in known:
                name = name.rpartition('.')[0]
            if name and name != module:
                found.append(name)
    return sorted(set(found))


def import_graph() -> Dict[str, List[str]]:
    modules = package_modules()
    return {
        name: imports_of(path, name, set(modules))
        for name, path in modules.items()
    }


def find_cycle(graph: Dict[str, List[str]]) -> List[str]:
    """One import cycle of ``graph`` (a list of modules), or []. A package
    importing its own submodules (``__init__``) is not a cycle."""
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(node: str) -> List[str]:
        state[node] = 1
        stack.append(node)
        for target in graph[node]:
            if target.startswith(node + '.'):
                continue  # a package's __init__ importing its submodule
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return []

    for node in graph:
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return []


def test_the_checker_finds_a_cycle():
    assert find_cycle({'a': ['b'], 'b': ['c'], 'c': ['a']}) == [
        'a', 'b', 'c', 'a'
    ]
    assert find_cycle({'a': ['a.b'], 'a.b': [], 'c': ['a']}) == []


def test_the_graph_sees_function_level_and_relative_imports(tmp_path):
    path = tmp_path / 'mod.py'
    path.write_text('from .b import f\n\ndef g():\n    from mmdyt.c import h'
                    '\n    import mmdyt.d\n')
    known = {'mmdyt', 'mmdyt.a', 'mmdyt.a.b', 'mmdyt.c', 'mmdyt.d'}
    assert imports_of(str(path), 'mmdyt.a.mod', known) == [
        'mmdyt.a.b', 'mmdyt.c', 'mmdyt.d'
    ]


def test_mmdyt_has_no_import_cycle():
    graph = import_graph()
    assert 'mmdyt.models.backbones.dyt_vit' in graph
    assert find_cycle(graph) == []


def test_nothing_in_mmdyt_imports_the_tools():
    tool_modules = set()
    for root, _, files in os.walk(osp.join(REPO_ROOT, 'tools')):
        tool_modules.update(f[:-3] for f in files if f.endswith('.py'))
    for name, path in package_modules().items():
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.Import):
                sources = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                sources = [node.module or '']
            else:
                continue
            for source in sources:
                top = source.split('.')[0]
                assert top != 'tools' and top not in tool_modules, (
                    f'{name} imports {source}')


def test_weights_are_read_in_one_module():
    """Only checkpoint_loading.py reads checkpoint files in the models,
    engine and datasets (compat.py only allow-lists what torch.load may
    unpickle)."""
    readers = []
    for name, path in package_modules().items():
        if name == 'mmdyt.compat':
            continue
        text = open(path).read()
        if 'CheckpointLoader' in text or 'torch.load(' in text:
            readers.append(name)
    assert readers == ['mmdyt.models.backbones.checkpoint_loading']
