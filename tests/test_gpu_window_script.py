"""benchmarks/gpu_window.py's CPU dry run: the device command's steps (staging, unpacking, the packages the GPU
image lacks hidden, the window, the summary) at tiny settings, and what comes back."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_dry_run_brings_back_at_most_five_files_with_an_archive(tmp_path, data_dir):
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "benchmarks/gpu_window.py", "dry-run", str(out), "--seconds", "200",
                           "--stage-dir", str(tmp_path / "stage")], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 5 and "results-smoke.tar.gz" in files and "summary.csv" in files, files
    assert any(f.startswith("window-") and f.endswith(".log") for f in files)
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert rows and all(r["profile"] == "smoke" and r["one_class_collapse"] in ("True", "False") for r in rows)
    with tarfile.open(out / "results-smoke.tar.gz") as tar:
        meta = json.load(tar.extractfile("smoke/bundle.json"))
    assert len(meta["runs"]) == len(rows)
    # grad-cam is hidden as on the GPU image: the baselines are packed without it, and the bundle says so
    assert meta["not_derived"] and all("pytorch_grad_cam" in why for why in meta["not_derived"].values())
    with tarfile.open(out / "diagnostics.tar.gz") as tar:
        names = tar.getnames()
    assert "diagnostics/report-smoke.json" in names and "diagnostics/environment.json" in names
