"""The code's shape, checked on its syntax tree: no function over 80 lines, and no import circle between the
package's modules (imports inside functions and imports only for type checking included)."""
import ast
import pathlib

from tests.conftest import ROOT

MAX_LINES = 80


def _sources(*patterns: str) -> list[pathlib.Path]:
    root = pathlib.Path(ROOT)
    return sorted(p for pattern in patterns for p in root.glob(pattern) if ".venv" not in p.parts)


def test_no_function_is_longer_than_80_lines():
    long = [f"{p.relative_to(ROOT)}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1} lines)"
            for p in _sources("*.py", "layerbench/**/*.py", "bench/**/*.py", "examples/**/*.py", "tests/**/*.py")
            for n in ast.walk(ast.parse(p.read_text()))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > MAX_LINES]
    assert not long


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _all_nodes(tree: ast.AST):
    yield from ast.walk(tree)


def _imports(path: pathlib.Path, modules: set[str]) -> set[str]:
    found = set()
    for node in _all_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found & modules


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle, if there is any (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (found := visit(target)):
                return found
        state[module] = 2
        path.pop()
        return None
    for module in sorted(graph):
        if module not in state and (found := visit(module)):
            return found
    return None


def test_no_import_circle_in_the_package():
    paths = {_module_name(p): p for p in _sources("layerbench/**/*.py")}
    graph = {m: _imports(p, set(paths)) - {m} for m, p in paths.items()}
    graph = {m: {t for t in targets if not m.startswith(t + ".")} for m, targets in graph.items()}  # a parent package
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_circle_finder_finds_a_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_method_or_strategy_name_is_a_literal_outside_its_own_file():
    """A pruning method's or generation strategy's name is written only in its own file (everything else reads
    the registries)."""
    from layerbench.decoding import STRATEGIES
    from layerbench.surgery.methods import PRUNE_METHODS
    owners = {name: method.decide.__module__ for name, method in PRUNE_METHODS.items()}
    owners.update({name: type(strategy).__module__ for name, strategy in STRATEGIES.items()})
    owners = {name: module.replace(".", "/") + ".py" for name, module in owners.items()}
    found = [f"{p.relative_to(ROOT)}:{node.lineno} {node.value!r}"
             for p in _sources("layerbench/**/*.py") for node in ast.walk(ast.parse(p.read_text()))
             if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in owners
             and str(p.relative_to(ROOT)) != owners[node.value]]
    assert not found


def test_scripts_import_the_installed_package_without_touching_sys_path():
    """setup.sh installs the package (editable), so no script or example inserts into sys.path."""
    for script in ("tasks/build_tasks.py", "examples/layer_compression_example.py", "benchmark.py", "generate.py",
                   "analyze_logs.py"):
        tree = ast.parse(pathlib.Path(ROOT, script).read_text())
        touched = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "path"
                   and isinstance(n.value, ast.Name) and n.value.id == "sys"]
        assert not touched, f"{script}:{touched}"
