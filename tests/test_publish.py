"""Publishing: the GitHub Actions workflow and `make publish` name the commands that build from a bundle."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import tomllib

from tests.pages_workflow import build_command, workflow

ROOT = Path(__file__).resolve().parents[1]
def test_workflow_builds_from_the_bundle_and_deploys_to_pages():
    wf = workflow()
    triggers = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on` as true
    assert "main" in triggers["push"]["branches"] and "results/**" in triggers["push"]["paths"]
    assert triggers["workflow_dispatch"]["inputs"]["profile"]["default"] == "best"
    assert wf["permissions"] == {"contents": "write"}  # the gh-pages branch, which the Colab buttons read
    steps = wf["jobs"]["build"]["steps"]
    runs = [s["run"] for s in steps if "run" in s]
    assert 'make book PROFILE="$PROFILE" FROM_RESULTS=1' in runs
    push = next(r for r in runs if "ghp-import" in r)
    assert "--push --force" in push and push.rstrip().endswith("_build/html") and "--branch" not in push
    # the bundle carries its data summary: nothing is downloaded or cached for the data
    assert not any("download" in r or "data" in r.split() for r in runs)
    assert not any(s.get("uses", "").startswith("actions/cache") for s in steps)
    assert set(wf["jobs"]) == {"build"}  # one branch for the site: ghp-import's default, launch.PAGES_BRANCH
    assert "best" in wf["env"]["PROFILE"] and "cpu" in wf["env"]["PIP_EXTRA_INDEX_URL"]
    # no GPU, no training anywhere in the job
    assert not any("--jobs" in r or "skinlib train" in r or "study" in r for r in runs)


def _make_n(*args: str) -> list[list[str]]:
    out = subprocess.run(["make", "-n", "--no-print-directory", "-C", str(ROOT), *args], capture_output=True,
                         text=True, check=True).stdout  # (no "Entering directory .../skinlib" lines)
    return [shlex.split(line) for line in out.splitlines()
            if ("skinlib" in line or "ghp-import" in line) and not line.startswith(("make:", "make["))]


def test_make_targets_render_bundles_and_publish_by_hand():
    book = [c for c in _make_n("book", "PROFILE=gpu") if c[0].endswith("skinlib")]
    assert book == [[".venv/bin/skinlib", "book", "--profile", "gpu", "--from-results"]]
    smoke = [c for c in _make_n("book", "HAVE_DATA=1") if c[0].endswith("skinlib")]  # data here: train smoke
    assert smoke == [[".venv/bin/skinlib", "book", "--profile", "smoke", "--jobs", "auto"]]
    cmd = shlex.split(build_command().replace('"$PROFILE"', "smoke"))
    assert [c for c in _make_n(*cmd[1:]) if c[0].endswith("skinlib")] == [
        [".venv/bin/skinlib", "book", "--profile", "smoke", "--from-results"]]
    def complete(p: str) -> bool:
        meta = ROOT / "results" / p / "bundle.json"
        return meta.is_file() and json.loads(meta.read_text()).get("complete") is True

    best = next(p for p in ("paper", "gpu", "cpu", "smoke") if complete(p))
    assert best == "smoke" or (ROOT / "results" / best).is_dir()  # smoke is always committed
    cmd = shlex.split(build_command().replace('"$PROFILE"', "best"))
    assert [c for c in _make_n(*cmd[1:]) if c[0].endswith("skinlib")] == [
        [".venv/bin/skinlib", "book", "--profile", best, "--from-results"]]
    no_data = [c for c in _make_n("book", "HAVE_DATA=") if c[0].endswith("skinlib")]  # no data: the best bundle
    assert no_data == [[".venv/bin/skinlib", "book", "--profile", best, "--from-results"]]
    publish = _make_n("publish")
    assert publish[-2] == [".venv/bin/skinlib", "book", "--profile", best, "--from-results"]
    assert publish[-1][0].endswith("ghp-import") and publish[-1][-1] == "_build/html" and "--push" in publish[-1]
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["book"]
    assert any(dep.startswith("ghp-import") for dep in extra)
