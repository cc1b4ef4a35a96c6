"""The import graph the developer guide promises: each module imports only from its own layer or the layers
below, and no two modules import each other, directly or through others (every import counted, those inside
functions too)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "skinlib"

# the developer guide's tree (book/developers.md), bottom up: a module may import from its own layer and below
LAYERS: list[tuple[str, ...]] = [
    ("io", "runtime", "policy", "losses"),
    ("fetch",),
    ("data", "models"),
    ("runs", "evaluate"),
    ("optim", "loop", "train", "paper", "plots", "subgroups"),
    ("efficiency",),
    ("inference",),
    ("explain",),
    ("study",),
    ("book",),
    ("cli", "commands", "__main__"),
]


def layer_of(module: str) -> int:
    """The layer of ``skinlib.<part>...``: its first part (a package or a top-level module)."""
    part = module.split(".")[1] if "." in module else "__init__"
    for i, names in enumerate(LAYERS):
        if part in names:
            return i
    raise AssertionError(f"skinlib.{part} is in no layer of LAYERS (and the developer guide's tree): add it")


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """Every ``skinlib`` module ``path`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("skinlib.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("skinlib") \
                and node.level == 0:
            base = node.module
            for alias in node.names:  # `from skinlib.data import index` imports a module, not a name
                candidate = f"{base}.{alias.name}"
                as_path = ROOT.parent / candidate.replace(".", "/")
                found.add(candidate if as_path.with_suffix(".py").is_file() or as_path.is_dir() else base)
    return {m for m in found if m != "skinlib"}


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}
GRAPH = {name: {m for m in imports(path) if m in MODULES} for name, path in MODULES.items()}


def test_every_import_goes_down_or_sideways():
    upward = [f"{a} -> {b}" for a, bs in GRAPH.items() for b in bs
              if a != "skinlib" and layer_of(b) > layer_of(a)]
    assert not upward, f"imports from a higher layer: {upward}"


def test_no_two_modules_import_each_other():
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH.get(node, ())):
            if nxt.startswith(node + ".") or node.startswith(nxt + "."):
                continue  # a package and its own modules (the package's face re-exports them)
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if not state.get(nxt):
                found = visit(nxt)
                if found:
                    return found
        state[node] = 2
        stack.pop()
        return None

    for name in sorted(GRAPH):
        if not state.get(name):
            cycle = visit(name)
            assert cycle is None, f"an import cycle: {' -> '.join(cycle)}"


def test_only_the_policy_spells_the_training_switches():
    """The variables that carry the training policy into kernels and child processes are named in one module."""
    from skinlib.policy import ENV

    for path in sorted(ROOT.rglob("*.py")):
        if path.name != "policy.py":
            text = path.read_text()
            assert not [name for name in ENV.values() if name in text], path.relative_to(ROOT)



# what may be imported inside a function instead of at the top of a module: packages that are optional or heavy
# and needed by few functions (the book's execution and grading stack, Grad-CAM, ONNX, safetensors, Sphinx, timm's
# hub code), fcntl (absent on Windows), and torch where the run store is read without training. The CLI's commands
# (skinlib/commands/) import inside themselves, so that `skinlib --help` and a mistyped command answer before the
# library loads.
DEFERRED = {"IPython", "myst_nb", "nbclient", "nbformat", "papermill", "pytorch_grad_cam", "onnx", "onnxruntime",
            "safetensors", "sphinx", "timm", "fcntl"}
DEFERRED_IN = {"runs/store.py": {"torch"}, "cli.py": {"*"},
               **{f"commands/{path.name}": {"*"} for path in (ROOT / "commands").glob("*.py")}}


def inner_imports(path: Path) -> list[tuple[int, str]]:
    """Each import inside a function of ``path``: its line and the top-level package it names."""
    found = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import):
                    found.update({(inner.lineno, a.name.split(".")[0]): None for a in inner.names})
                elif isinstance(inner, ast.ImportFrom):
                    found[inner.lineno, "." if inner.level else (inner.module or "").split(".")[0]] = None
    return sorted(found)


def test_imports_are_at_the_top_of_modules_but_for_optional_heavy_packages():
    late = []
    for path in sorted(ROOT.rglob("*.py")):
        allowed = DEFERRED | DEFERRED_IN.get(path.relative_to(ROOT).as_posix(), set())
        late += [f"{path.relative_to(ROOT)}:{line} imports {package} inside a function"
                 for line, package in inner_imports(path) if "*" not in allowed and package not in allowed]
    assert not late, "move these imports to the top of their modules:\n" + "\n".join(late)


def test_the_deferred_imports_check_can_fail(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    import json\n    from skinlib.data import CLASSES\n    import nbformat\n")
    assert inner_imports(bad) == [(2, "json"), (3, "skinlib"), (4, "nbformat")]
    assert [package for _, package in inner_imports(bad) if package not in DEFERRED] == ["json", "skinlib"]
