"""The folders a build or a chapter works in: resolved once, a given folder that is missing named at once."""

from __future__ import annotations

import pytest

from skinlib.data.cache import CACHE_ENV
from skinlib.data.paths import DATA_ENV
from skinlib.runs.store import RUNS_ENV
from skinlib.runs.workspace import Workspace


def test_the_folders_are_resolved_once_and_cross_into_a_kernel_as_variables(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    ws = Workspace.resolve(runs_dir=tmp_path / "runs")
    assert ws.runs == tmp_path / "runs" and ws.cache == tmp_path / "cache"
    assert ws.where["runs_dir"] == str(tmp_path / "runs")
    env = ws.env()
    assert env[RUNS_ENV] == str(tmp_path / "runs") and env[CACHE_ENV] == str(tmp_path / "cache")
    assert (DATA_ENV in env) == (ws.data is not None)
    moved = ws.with_data(tmp_path / "summary", tmp_path / "summary" / "isic")
    assert moved.runs == ws.runs and moved.env()[DATA_ENV] == str(tmp_path / "summary")


def test_a_data_folder_given_but_missing_is_an_error_not_a_fallback(tmp_path):
    """Falling back to another data folder when the one given is missing would train on other data silently."""
    with pytest.raises(FileNotFoundError, match="given explicitly"):
        Workspace.resolve(data_dir=tmp_path / "nowhere")
