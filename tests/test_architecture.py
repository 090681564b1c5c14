"""The package's house rules, read from its source: imports run one way, private names stay home.

- No import circle between the package's modules (every ``import`` / ``from ... import``,
  module-level or inside a function, counts; importing ``a.b.c`` also imports the packages
  ``a.b`` and ``a`` unless the importer lives inside them).
- No name starting with ``_`` is imported from another module, or read as ``module._name``.
- One public import path per name: no name is listed in two ``__all__``; every name listed
  exists; subpackages list their public names in ``__init__``, their inner modules list none.
- The notebooks import from the package only names that a module or subpackage lists in its
  ``__all__``, and only from that one place.

The checker functions are tested on small hand-made packages first, so a green run here means
the rules hold, not that the checker sees nothing.
"""

from __future__ import annotations

import ast
import importlib
import json
from pathlib import Path

import pytest

PACKAGE = "deeplab_lessons"
ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


# --------------------------------------------------------------------------------------------
# A small static import analyser


def module_files(package_dir: Path, package: str) -> dict[str, Path]:
    """``{"pkg.sub.mod": path}`` for every ``.py`` file under ``package_dir``."""
    out = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join([package, *parts])] = path
    return out


def _is_package(name: str, files: dict[str, Path]) -> bool:
    return name in files and files[name].name == "__init__.py"


def _resolve(importer: str, files: dict[str, Path], module: str | None, level: int) -> str:
    if level == 0:
        return module or ""
    base = importer.split(".")
    if not _is_package(importer, files):
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _under_main_guard(tree: ast.Module) -> set[int]:
    """ids of nodes inside ``if __name__ == "__main__":`` (a script's entry, not an import of it)."""
    inside = set()
    for node in tree.body:
        if (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
                and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__"):
            inside.update(id(n) for n in ast.walk(node))
    return inside


def import_facts(files: dict[str, Path], package: str):
    """Edges ``importer -> imported module`` and the private names each module takes from another.

    Returns ``(edges, private)``: ``edges[m]`` is the set of package modules ``m`` imports;
    ``private`` a list of ``(importer, source module, name, line)``.
    """
    edges: dict[str, set[str]] = {m: set() for m in files}
    private: list[tuple[str, str, str, int]] = []

    def add_edge(importer: str, target: str) -> None:
        parts = target.split(".")
        for i in range(1, len(parts) + 1):          # a.b.c imports a, a.b, a.b.c
            name = ".".join(parts[:i])
            if name in files and name != importer and not importer.startswith(name + "."):
                edges[importer].add(name)

    for importer, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        skip = _under_main_guard(tree)
        module_aliases: dict[str, str] = {}
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == package:
                        add_edge(importer, alias.name)
                        module_aliases[alias.asname or alias.name] = alias.name
            elif isinstance(node, ast.ImportFrom):
                source = _resolve(importer, files, node.module, node.level)
                if source.split(".")[0] != package:
                    continue
                add_edge(importer, source)
                for alias in node.names:
                    full = f"{source}.{alias.name}"
                    if full in files:
                        add_edge(importer, full)
                        module_aliases[alias.asname or alias.name] = full
                    elif alias.name.startswith("_") and source != importer:
                        private.append((importer, source, alias.name, node.lineno))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in module_aliases and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                private.append((importer, module_aliases[node.value.id], node.attr, node.lineno))
    return edges, private


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if state.get(nxt) is None:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if state.get(start) is None:
            found = visit(start)
            if found:
                return found
    return None


def all_lists(files: dict[str, Path]) -> dict[str, list[str]]:
    """``{module: its __all__}`` for the modules that define one (read statically)."""
    out = {}
    for name, path in files.items():
        for node in ast.parse(path.read_text()).body:
            if (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__"
                                                     for t in node.targets)):
                out[name] = list(ast.literal_eval(node.value))
    return out


# --------------------------------------------------------------------------------------------
# The checker, on hand-made packages


def _write(tmp_path: Path, tree: dict[str, str]) -> dict[str, Path]:
    for rel, text in tree.items():
        path = tmp_path / "pkg" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return module_files(tmp_path / "pkg", "pkg")


def test_checker_finds_a_circle_through_a_function_level_import(tmp_path):
    files = _write(tmp_path, {"__init__.py": "", "a.py": "from .b import f\n",
                              "b.py": "def f():\n    from pkg.a import g\n"})
    edges, _ = import_facts(files, "pkg")
    assert find_cycle(edges) in (["pkg.a", "pkg.b", "pkg.a"], ["pkg.b", "pkg.a", "pkg.b"])


def test_checker_counts_the_parent_package_of_an_imported_submodule(tmp_path):
    files = _write(tmp_path, {"__init__.py": "", "sub/__init__.py": "from .x import X\n",
                              "sub/x.py": "X = 1\n", "top.py": "from pkg.sub.x import X\n",
                              "sub/y.py": "from pkg.top import X\n"})
    edges, _ = import_facts(files, "pkg")
    assert "pkg.sub" in edges["pkg.top"]
    assert find_cycle(edges) is None
    files = _write(tmp_path, {"sub/__init__.py": "from .x import X\nfrom .y import X as Y\n"})
    edges, _ = import_facts(files, "pkg")
    assert find_cycle(edges) is not None           # sub -> sub.y -> top -> sub


def test_checker_ignores_a_script_entry_and_sibling_imports_inside_a_package(tmp_path):
    files = _write(tmp_path, {"__init__.py": "", "sub/__init__.py": "from .x import X\n",
                              "sub/x.py": "from .z import Z\nX = Z\n", "sub/z.py": "Z = 1\n",
                              "run.py": "import sys\nif __name__ == '__main__':\n    from pkg.cli import main\n",
                              "cli.py": "from pkg.run import sys\n"})
    edges, _ = import_facts(files, "pkg")
    assert find_cycle(edges) is None


def test_checker_finds_private_names(tmp_path):
    files = _write(tmp_path, {"__init__.py": "", "a.py": "def _h(): pass\ndef _own(): _h()\n",
                              "b.py": "from .a import _h\n", "c.py": "from pkg import a\na._h()\n",
                              "d.py": "from . import a\nprint(a.__name__)\n"})
    _, private = import_facts(files, "pkg")
    assert sorted((imp, name) for imp, _, name, _ in private) == [("pkg.b", "_h"), ("pkg.c", "_h")]


# --------------------------------------------------------------------------------------------
# The rules, on the package


@pytest.fixture(scope="module")
def package_files() -> dict[str, Path]:
    return module_files(ROOT / PACKAGE, PACKAGE)


def test_no_import_circle(package_files):
    edges, _ = import_facts(package_files, PACKAGE)
    cycle = find_cycle(edges)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_no_private_name_crosses_modules(package_files):
    _, private = import_facts(package_files, PACKAGE)
    assert not private, "private names imported from another module:\n" + "\n".join(
        f"  {imp} (line {line}) takes {name} from {src}" for imp, src, name, line in private)


def test_one_public_path_per_name(package_files):
    lists = all_lists(package_files)
    inner = [m for m in lists if not package_files[m].name == "__init__.py"
             and _is_package(m.rsplit(".", 1)[0], package_files) and m.rsplit(".", 1)[0] != PACKAGE]
    assert not inner, f"inner modules of a subpackage list names; list them in the subpackage's __init__: {inner}"
    seen: dict[str, str] = {}
    doubles = []
    for module, names in lists.items():
        for name in names:
            if name in seen:
                doubles.append(f"{name}: {seen[name]} and {module}")
            seen[name] = module
    assert not doubles, "names with two public import paths:\n  " + "\n  ".join(doubles)


def test_every_listed_name_exists_and_every_public_module_has_all(package_files):
    lists = all_lists(package_files)
    public = [m for m in package_files if m != PACKAGE and (
        _is_package(m, package_files) or m.rsplit(".", 1)[0] == PACKAGE) and not m.endswith("__main__")]
    missing_all = [m for m in public if m not in lists]
    assert not missing_all, f"modules without __all__: {missing_all}"
    for module, names in lists.items():
        mod = importlib.import_module(module)
        absent = [n for n in names if not hasattr(mod, n)]
        assert not absent, f"{module}.__all__ lists names it does not have: {absent}"


def _notebook_imports(path: Path, modules: dict[str, Path]) -> list[tuple[str, list[str]]]:
    """``(module, names)`` a notebook takes from the package; ``module.attr`` reads of a package
    module it imported count as ``(module, [attr])``."""
    out = []
    trees = []
    for cell in json.loads(path.read_text())["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        try:
            trees.append(ast.parse("\n".join(line for line in source.splitlines()
                                             if not line.lstrip().startswith(("%", "!")))))
        except SyntaxError:
            continue
    aliases: dict[str, str] = {}
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == PACKAGE:
                out.append((node.module, [a.name for a in node.names]))
                aliases.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names
                                if f"{node.module}.{a.name}" in modules})
            elif isinstance(node, ast.Import):
                out += [(a.name, []) for a in node.names if a.name.split(".")[0] == PACKAGE]
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
                out.append((aliases[node.value.id], [node.attr]))
    return out


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_import_only_public_paths(notebook, package_files):
    lists = all_lists(package_files)
    wrong = []
    for module, names in _notebook_imports(notebook, package_files):
        for name in names:
            if f"{module}.{name}" in package_files:
                if module != PACKAGE:
                    wrong.append(f"from {module} import {name} (a module: import it from {PACKAGE})")
                continue
            if name not in lists.get(module, []):
                home = [m for m, listed in lists.items() if name in listed]
                wrong.append(f"from {module} import {name} (public path: {home or 'none'})")
        if not names and module not in (PACKAGE,) and module not in lists:
            wrong.append(f"import {module} (not a public module)")
    assert not wrong, f"{notebook.name}:\n  " + "\n  ".join(wrong)


#: The package's layers, bottom to top, as the package docstring lists them.
LAYERS = ("papers", "receptive_field", "atrous", "metrics", "models", "data", "config", "inference", "crf", "train",
          "experiments", "viz", "widgets")


def test_imports_run_down_the_layers(package_files):
    edges, _ = import_facts(package_files, PACKAGE)
    rank = {name: i for i, name in enumerate(LAYERS)}
    parts = {m.split(".")[1] for m in package_files if m != PACKAGE}
    assert parts == set(LAYERS), f"a module is missing from LAYERS: {sorted(parts - set(LAYERS))}"
    upward = [f"{a} -> {b}" for a, targets in edges.items() for b in targets
              if a != PACKAGE and b != PACKAGE and rank[b.split(".")[1]] > rank[a.split(".")[1]]]
    assert not upward, "imports that run up the layers:\n  " + "\n  ".join(sorted(upward))


def test_paper_figures_carry_their_source():
    from deeplab_lessons.papers import PAPER_FIGURES, cite, paper

    for key, fig in PAPER_FIGURES.items():
        assert fig.source in ("v1", "v2", "v3", "v3+", "crfrnn", "released config"), key
        assert fig.where and fig.what, key
    assert cite("v1.rf.7x7.convolutional") == "404 px (v1, Sec. 3.2)"
    with pytest.raises(KeyError, match="figures of 'v1'"):
        paper("v1.nope")
