"""Every package's public names exist: ``from skinlib.X import *`` works for each module with ``__all__``."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest

import skinlib

MODULES = sorted(m.name for m in pkgutil.walk_packages(skinlib.__path__, "skinlib.") if m.name != "skinlib.__main__")


@pytest.mark.parametrize("name", MODULES)
def test_all_lists_only_existing_names(name):
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    if exported is None:
        return
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ lists names it does not define: {missing}"
    namespace: dict = {}
    exec(f"from {name} import *", namespace)
    assert set(exported) <= set(namespace)


def test_packages_declare_all():
    for name in ("skinlib.data", "skinlib.models"):
        assert hasattr(importlib.import_module(name), "__all__"), name


def test_the_code_and_the_notebooks_pass_the_linter():
    import shutil
    import subprocess
    import sys

    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (the dev extra has it)")
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([ruff, "check", "skinlib", "tests", "benchmarks", "notebooks"], cwd=root,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:]
