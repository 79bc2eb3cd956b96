"""The structure of the package and the tools: no import cycles, no tool code
inside mmdyt; in tools/ no sys.path and no private attributes of mmdyt
objects."""
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
    tool_modules = {'mmdyt_tools'}
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


# ------------------------------------------------------------------ tools
TOOLS = osp.join(REPO_ROOT, 'tools')
#: The tools' library: ``tools/mmdyt_tools``, imported as ``mmdyt_tools``.
TOOLS_PACKAGE = 'mmdyt_tools'
#: Private attributes of other objects the tools may read: torch's own
#: internals (compiler caches and settings), never an mmdyt object's.
ALLOWED_PRIVATE = {'torch._dynamo', 'torch._inductor'}


def tool_files(root: str = TOOLS, suffix: str = '.py') -> List[str]:
    """Every file under ``root`` whose name ends with ``suffix``."""
    return sorted(
        osp.join(folder, name) for folder, _, files in os.walk(root)
        for name in files if name.endswith(suffix))


def tool_import_graph(root: str = TOOLS) -> Dict[str, List[str]]:
    """The import graph of everything under ``tools/``: the modules of the
    ``mmdyt_tools`` package (``mmdyt_tools.x.y``) and the scripts
    (``<folder>/<name>.py``). A script's ``import foo`` of a script ``foo``
    in its own folder (found on ``sys.path[0]`` when it runs) is an edge to
    that sibling; imports of ``mmdyt_tools`` resolve to its modules."""
    package_root = osp.join(root, TOOLS_PACKAGE)
    package, scripts = {}, {}
    for path in tool_files(root):
        relative = osp.relpath(path, root)
        if path.startswith(package_root + os.sep):
            parts = relative[:-len('.py')].split(os.sep)
            if parts[-1] == '__init__':
                parts = parts[:-1]
            package['.'.join(parts)] = path
        else:
            scripts[relative] = path
    graph = {
        name: imports_of(path, name, set(package))
        for name, path in package.items()
    }
    for name, path in scripts.items():
        folder = osp.dirname(name)
        siblings = {
            osp.splitext(osp.basename(other))[0]: other
            for other in scripts
            if osp.dirname(other) == folder and other != name
        }
        found = imports_of(path, '', set(package) | set(siblings))
        graph[name] = sorted(siblings.get(f, f) for f in found)
    return graph


def private_accesses(path: str) -> List[str]:
    """``obj._name`` expressions of a file whose object is not ``self``,
    ``cls`` or ``super()`` and not in :data:`ALLOWED_PRIVATE` (dunder
    names such as ``__file__`` are not private)."""
    found = []
    for node in ast.walk(ast.parse(open(path).read())):
        if not (isinstance(node, ast.Attribute)
                and node.attr.startswith('_')
                and not node.attr.startswith('__')):
            continue
        value = node.value
        if isinstance(value, ast.Name) and value.id in ('self', 'cls'):
            continue
        if isinstance(value, ast.Call) and isinstance(
                value.func, ast.Name) and value.func.id == 'super':
            continue
        text = ast.unparse(node)
        if text not in ALLOWED_PRIVATE:
            found.append(f'{path}:{node.lineno}: {text}')
    return found


def test_the_tools_graph_sees_siblings_and_the_package(tmp_path):
    (tmp_path / 'mmdyt_tools' / 'sub').mkdir(parents=True)
    (tmp_path / 'mmdyt_tools' / '__init__.py').write_text('')
    (tmp_path / 'mmdyt_tools' / 'sub' / '__init__.py').write_text('')
    (tmp_path / 'mmdyt_tools' / 'sub' / 'a.py').write_text(
        'from mmdyt_tools.sub import b\n')
    (tmp_path / 'mmdyt_tools' / 'sub' / 'b.py').write_text('import torch\n')
    (tmp_path / 'cli').mkdir()
    (tmp_path / 'cli' / 'main.py').write_text(
        'import helper\nfrom mmdyt_tools.sub.a import f\n')
    (tmp_path / 'cli' / 'helper.py').write_text('import main\n')
    graph = tool_import_graph(str(tmp_path))
    assert graph['mmdyt_tools.sub.a'] == [
        'mmdyt_tools.sub', 'mmdyt_tools.sub.b'
    ]
    assert graph['cli/main.py'] == ['cli/helper.py', 'mmdyt_tools.sub.a']
    assert find_cycle(graph) in (
        ['cli/main.py', 'cli/helper.py', 'cli/main.py'],
        ['cli/helper.py', 'cli/main.py', 'cli/helper.py'])


def test_the_tools_have_no_import_cycle():
    graph = tool_import_graph()
    assert 'mmdyt_tools.benchmark.models' in graph
    assert 'analysis_tools/benchmark_backbone.py' in graph
    assert find_cycle(graph) == []


def test_no_tool_touches_sys_path():
    """The tools import ``mmdyt_tools`` as an installed package, never by
    putting a folder on ``sys.path``."""
    offenders = [
        path for path in tool_files(suffix='')
        if 'sys.path' in open(path, errors='replace').read()
    ]
    assert offenders == []


def test_the_checker_finds_private_accesses(tmp_path):
    path = tmp_path / 'tool.py'
    path.write_text('import torch\n\nclass A:\n\n    def f(self, model):\n'
                    '        self._x = model._y + super()._z\n'
                    '        torch._dynamo.reset()\n'
                    '        return model.block.__class__, torch._C\n')
    assert [line.split(': ')[1] for line in private_accesses(str(path))
            ] == ['model._y', 'torch._C']


def test_no_tool_reads_private_attributes_of_other_objects():
    """The tools use mmdyt's public API only: no ``model._x``,
    ``block._x`` or ``dispatcher._x`` (a tool's own ``self._x`` is fine,
    and so are torch's compiler internals, :data:`ALLOWED_PRIVATE`)."""
    found = [hit for path in tool_files() for hit in private_accesses(path)]
    assert found == []
