"""The package's layer rules, read from the source with `ast` (nothing is imported):

- savatar.core (the maths) imports neither the viewer, GL, the commands, the live drive sources
  nor a GUI or GL library, not even inside a function;
- no import cycle anywhere in savatar, counting imports inside functions and under
  `if TYPE_CHECKING:` too: a cycle dodged with a lazy import is still a cycle.

The checks are tried on small packages written to tmp_path, so that a rule which found nothing
is known to look."""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CORE = "savatar.core"
# What savatar.core must never import: the application layers above it (savatar.drive holds the
# live capture threads) and the GUI / OpenGL libraries.
CORE_FORBIDDEN = ("savatar.viewer", "savatar.gl", "savatar.commands", "savatar.drive", "savatar.cli",
                  "savatar.cli_args", "dearpygui", "pyglet", "moderngl")


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported name, absolute (a module of the package where it is one)
    path: Path
    line: int


def modules(root: Path, package: str) -> dict[str, Path]:
    """Dotted name -> file, for every .py under root/package (a package is its __init__.py)."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _in(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _dynamic_import(node: ast.Call) -> str | None:
    """The module of importlib.import_module("x") / __import__("x") with a literal name."""
    f = node.func
    name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
    if name in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant) \
            and isinstance(node.args[0].value, str) and not node.args[0].value.startswith("."):
        return node.args[0].value
    return None


def imports(root: Path, package: str) -> list[Import]:
    """Every import statement anywhere in the package's files (module level, in functions, under
    if/try), with relative imports made absolute and `from a import b` resolved to the module
    a.b where b is one."""
    mods = modules(root, package)
    out = []
    for source, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = source.split(".")[:None if is_pkg else -1]
                    base = base[:len(base) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in mods else module for a in node.names]
            elif isinstance(node, ast.Call):
                targets = [t for t in [_dynamic_import(node)] if t]
            out += [Import(source, t, path, node.lineno) for t in targets]
    return out


def module_graph(root: Path, package: str) -> dict[str, dict[str, Import]]:
    """module -> {module it imports: the first such import}. Importing a.b.c also runs the
    __init__ of a and a.b, so those count too (except the importer's own packages, which are
    already imported when it runs)."""
    mods = modules(root, package)
    graph: dict[str, dict[str, Import]] = {m: {} for m in mods}
    for imp in imports(root, package):
        name = imp.target
        while name and name not in mods:  # `import a.b.c` of a name, not a module: its module
            name = name.rpartition(".")[0]
        parts = name.split(".")
        own = {".".join(imp.source.split(".")[:k]) for k in range(1, len(imp.source.split(".")))}
        for k in range(1, len(parts) + 1):
            target = ".".join(parts[:k])
            if target in mods and target != imp.source and target not in own:
                graph[imp.source].setdefault(target, imp)
    return graph


def find_cycle(graph: dict[str, dict[str, Import]]) -> list[Import] | None:
    """The imports along one cycle of the graph, or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[Import] = []

    def visit(m: str) -> list[Import] | None:
        state[m] = 1
        for target, imp in sorted(graph[m].items()):
            if state.get(target) == 1:
                start = next(i for i, p in enumerate(path) if p.source == target) if target != m else len(path)
                return path[start:] + [imp]
            if target not in state:
                path.append(imp)
                found = visit(target)
                if found:
                    return found
                path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def core_violations(root: Path, package: str = "savatar") -> list[Import]:
    return [imp for imp in imports(root, package) if _in(imp.source, CORE)
            and any(_in(imp.target, f) for f in CORE_FORBIDDEN)]


def describe(imps: list[Import], root: Path) -> str:
    return "\n".join(f"  {i.source} -> {i.target}  ({i.path.relative_to(root)}:{i.line})" for i in imps)


# --- the rules on the package --------------------------------------------------------------------

def test_core_imports_no_application_layer_or_gui():
    bad = core_violations(ROOT)
    assert not bad, "savatar.core imports what it must not:\n" + describe(bad, ROOT)


def test_no_import_cycle():
    cycle = find_cycle(module_graph(ROOT, "savatar"))
    assert cycle is None, "import cycle:\n" + describe(cycle, ROOT)


def test_the_graph_sees_the_package():
    """The graph holds what the package is known to import: a module-level import, one inside a
    function, and `from package import module`."""
    graph = module_graph(ROOT, "savatar")
    assert "savatar.core.render.rasterize_cpu" in graph["savatar.core.render.api"]
    assert "savatar.core.drive.face_landmarks" in graph["savatar.core.build.build"]  # in build_avatar
    assert "savatar.core.io.avatar_file" in graph["savatar.commands.common"]  # in a function
    assert len(graph) > 60


# --- the checks find what they look for -----------------------------------------------------------

def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in {"savatar/__init__.py": "", "savatar/core/__init__.py": "", **files}.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_checks_find_lazy_cycles_and_lazy_forbidden_imports(tmp_path):
    root = _package(tmp_path, {
        "savatar/core/a.py": "from savatar.core import b\n",
        "savatar/core/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from savatar.core.c import X\n",
        "savatar/core/c.py": "def f():\n    from .a import g\n    import pyglet\n",
        "savatar/core/d.py": "def f():\n    import importlib\n    importlib.import_module('savatar.viewer.app')\n",
        "savatar/core/e.py": "from savatar.core.drive import tracking\n",  # the core's drive stage is allowed
        "savatar/core/drive/__init__.py": "", "savatar/core/drive/tracking.py": "",
        "savatar/viewer/__init__.py": "", "savatar/viewer/app.py": "",
    })
    cycle = find_cycle(module_graph(root, "savatar"))
    assert [i.source for i in cycle] == ["savatar.core.a", "savatar.core.b", "savatar.core.c"]
    assert [i.line for i in cycle] == [1, 3, 2]
    assert sorted((i.source, i.target) for i in core_violations(root)) == [
        ("savatar.core.c", "pyglet"), ("savatar.core.d", "savatar.viewer.app")]


def test_checks_count_package_inits(tmp_path):
    """Importing a.b.c runs a.b's __init__: an __init__ importing back is a cycle."""
    root = _package(tmp_path, {
        "savatar/core/x/__init__.py": "from savatar.core.y import f\n",
        "savatar/core/x/m.py": "",
        "savatar/core/y.py": "def f():\n    from savatar.core.x.m import g\n",
    })
    cycle = find_cycle(module_graph(root, "savatar"))
    assert cycle is not None and {i.source for i in cycle} == {"savatar.core.x", "savatar.core.y"}
    assert find_cycle(module_graph(_package(tmp_path / "ok", {"savatar/core/x/__init__.py": "",
                                                              "savatar/core/x/m.py": "from savatar.core.x import n\n",
                                                              "savatar/core/x/n.py": ""}), "savatar")) is None
