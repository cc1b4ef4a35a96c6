"""The conda environments say what pyproject.toml says: the same packages and bounds, CPU/MPS and CUDA apart."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"torch": "pytorch"}  # pip name -> conda-forge name, where they differ


def _conda(path: Path) -> dict[str, str]:
    deps = yaml.safe_load(path.read_text())["dependencies"]
    out = {}
    for dep in deps:
        if isinstance(dep, str):
            name = re.match(r"[A-Za-z0-9_.-]+", dep).group(0)
            out[name] = dep[len(name):]
    return out


def _pyproject() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    specs = project["dependencies"] + extras["book"] + extras["onnx"] + [d for d in extras["dev"]
                                                                         if not d.startswith("skinlib")]
    out = {}
    for spec in specs:
        spec = spec.split(";")[0].strip()
        name = re.match(r"[A-Za-z0-9_.-]+", spec).group(0)
        out[CONDA_NAMES.get(name, name)] = spec[len(name):]
    return out


def test_both_environments_pin_what_pyproject_pins():
    wanted = _pyproject()
    for file in ("environment.yml", "environment-cuda.yml"):
        conda = _conda(ROOT / file)
        wrong = {name: (bounds, conda.get(name)) for name, bounds in wanted.items() if conda.get(name) != bounds}
        assert not wrong, f"{file} differs from pyproject.toml (pyproject, conda): {wrong}"


def test_cpu_and_cuda_environments_differ_only_in_the_cuda_build():
    cpu, cuda = _conda(ROOT / "environment.yml"), _conda(ROOT / "environment-cuda.yml")
    assert "pytorch-gpu" not in cpu and "pytorch-cpu" not in cpu  # solves on macOS (MPS) and CPU-only Linux
    assert set(cuda) - set(cpu) == {"pytorch-gpu"} and set(cpu) <= set(cuda)
    for file in ("environment.yml", "environment-cuda.yml"):
        pip = next(d for d in yaml.safe_load((ROOT / file).read_text())["dependencies"] if isinstance(d, dict))
        assert pip["pip"] == ["-e ."], file


def test_binder_builds_the_environment_then_installs_skinlib():
    """repo2docker solves binder/environment.yml before the repository is copied: it must not install `-e .`
    (postBuild does, after the copy), and it must hold the same packages as the root environment."""
    import os

    root = yaml.safe_load((ROOT / "environment.yml").read_text())
    binder = yaml.safe_load((ROOT / "binder" / "environment.yml").read_text())
    plain = [d for d in root["dependencies"] if isinstance(d, str)]
    assert binder["dependencies"] == plain and binder["channels"] == root["channels"]
    assert not any(isinstance(d, dict) for d in binder["dependencies"])  # no pip section: nothing to copy yet
    post = ROOT / "binder" / "postBuild"
    assert os.access(post, os.X_OK) and "pip install" in post.read_text() and "-e ." in post.read_text()


def test_the_citation_file_names_the_software_the_paper_and_the_data():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software" and cff["license"] == "MIT"
    assert cff["repository-code"] == yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    titles = " ".join(r["title"] for r in cff["references"])
    assert "MobileNetV3-Small" in titles and "HAM10000" in titles and "ISIC" in titles


def test_students_get_jupyterlab_and_the_teachers_page_says_how():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "skinlib[book]" in extras["student"] and any(d.startswith("jupyterlab") for d in extras["student"])
    page = (ROOT / "book" / "teachers.md").read_text()
    assert "skinlib[student]" in page and "jupyter lab handout/" in page
