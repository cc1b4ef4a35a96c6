"""Launch buttons (Binder, Colab) and the install cell every chapter starts with."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import nbformat
import pytest
import tomllib
import yaml

from skinlib.book.launch import source_links, write_launch_copies
from skinlib.data import download as dl
from skinlib.data.paths import DATA_ENV
from tests.published import fixture_files, serve

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())


def install_cells() -> list[nbformat.NotebookNode]:
    return [next(c for c in nbformat.read(p, as_version=4).cells if "install" in c.metadata.get("tags", []))
            for p in NOTEBOOKS]


def test_launch_buttons_are_configured_for_the_repository():
    repo = CONFIG["repository"]["url"]
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", repo)
    assert CONFIG["launch_buttons"]["binderhub_url"] == "https://mybinder.org"
    assert CONFIG["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert "skinlib.book.launch" in CONFIG["sphinx"]["extra_extensions"]
    urls = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]
    assert urls["Repository"] == repo


def test_launch_links_open_the_source_notebook():
    buttons = [{"type": "group", "label": "Launch", "buttons": [
        {"type": "link", "url": "https://mybinder.org/v2/gh/o/r/main?urlpath=lab/tree/book/executed/02_baselines.ipynb"},
        {"type": "link", "url": "https://colab.research.google.com/github/o/r/blob/main/book/executed/02_baselines.ipynb"},
    ]}, {"type": "link", "url": "https://github.com/o/r"},
        {"type": "link", "url": "../../_sources/book/executed/02_baselines.ipynb"}]
    out = source_links(buttons)
    assert out[0]["buttons"][0]["url"].endswith("?urlpath=lab/tree/notebooks/02_baselines.ipynb")
    assert out[0]["buttons"][1]["url"].endswith("/blob/main/notebooks/02_baselines.ipynb")
    assert out[1:] == buttons[1:] and out[0]["label"] == "Launch"
    commit = "0123456789abcdef0123456789abcdef01234567"
    pinned = source_links(buttons, branch="main", commit=commit)  # the page's own commit, not main's latest
    assert pinned[0]["buttons"][0]["url"] == f"https://mybinder.org/v2/gh/o/r/{commit}?urlpath=lab/tree/notebooks/02_baselines.ipynb"
    # Colab opens the site's copy whose install line names the commit (the committed one can only name a branch)
    assert pinned[0]["buttons"][1]["url"] == "https://colab.research.google.com/github/o/r/blob/gh-pages/_launch/02_baselines.ipynb"
    assert pinned[1:] == buttons[1:]


def test_the_colab_copies_install_the_commit_the_book_was_built_from(tmp_path):
    commit = "0123456789abcdef0123456789abcdef01234567"
    written = write_launch_copies(ROOT, tmp_path, commit)
    assert sorted(p.name for p in written) == [p.name for p in NOTEBOOKS]
    for copy in written:
        source = (ROOT / "notebooks" / copy.name).read_text()
        text = copy.read_text()
        assert f"git+{CONFIG['repository']['url']}@{commit}" in text and "@main" not in text
        assert text.replace(f"@{commit}", f"@{CONFIG['repository']['branch']}") == source  # nothing else changed
    assert write_launch_copies(ROOT, tmp_path / "none", "") == [] and not (tmp_path / "none").exists()


def test_every_chapter_starts_with_the_same_hidden_install_cell():
    cells = install_cells()
    assert len({c.source for c in cells}) == 1
    cell = cells[0]
    assert "remove-cell" in cell.metadata["tags"] and "parameters" not in cell.metadata["tags"]
    spec = re.search(r'"git\+(\S+)@(\w+)"', cell.source)
    assert spec and spec.group(1) == CONFIG["repository"]["url"] and spec.group(2) == CONFIG["repository"]["branch"]
    # right after the parameters cell, so papermill's injected `-p data_dir PATH` is seen by it
    assert "open_session(profile=profile, data_dir=data_dir" in cell.source
    for path in NOTEBOOKS:
        code = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
        assert "parameters" in code[0].metadata["tags"] and "install" in code[1].metadata["tags"], path.name


@pytest.mark.usefixtures("data_dir")  # needs the real images
def test_install_cell_does_nothing_on_a_set_up_machine(monkeypatch):
    def no_pip(*args, **kwargs):
        raise AssertionError(f"the install cell ran {args}")

    monkeypatch.setattr(subprocess, "run", no_pip)
    monkeypatch.setattr(dl, "download_data", no_pip)
    namespace = {"data_dir": "", "profile": "smoke", "bundle": "auto"}
    exec(compile(install_cells()[0].source, "install-cell", "exec"), namespace)
    assert namespace["profile"] == "smoke"  # the data is here: the chapter trains at the profile asked for


def test_install_cell_without_skinlib_checks_out_the_named_ref_bundles_included(tmp_path, monkeypatch):
    """Colab: skinlib is missing, so the cell clones the repository, checks out the ref its line names (the
    site's copies name the built commit), installs that checkout and imports from it; nothing else runs first."""
    import importlib.util

    commit = "0123456789abcdef0123456789abcdef01234567"
    source = write_launch_copies(ROOT, tmp_path / "site", commit)[0].read_text()
    cell = next(c for c in nbformat.reads(source, as_version=4).cells if "install" in c.metadata.get("tags", []))
    calls = []

    class Stop(Exception):
        pass

    def record(args, **kwargs):
        calls.append(list(args))
        assert kwargs.get("check") is True
        if args[0] == "git" and args[1] == "clone":
            (tmp_path / "skinlib-src").mkdir()

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "skinlib" else
                        real_find_spec(name, *a))
    monkeypatch.setattr(subprocess, "run", record)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", list(__import__("sys").path))
    namespace = {"data_dir": "", "profile": "smoke", "bundle": "auto"}
    code = cell.source.replace("from skinlib.book.session import open_session", "raise Stop")
    with pytest.raises(Stop):
        exec(compile(code, "install-cell", "exec"), {**namespace, "Stop": Stop})
    url = CONFIG["repository"]["url"]
    assert calls[0][:2] == ["git", "clone"] and calls[0][-2:] == [url, "skinlib-src"]
    assert calls[1] == ["git", "-C", "skinlib-src", "checkout", "--quiet", commit]
    assert calls[2][-2:] == ["-e", "skinlib-src[book]"] and len(calls) == 3
    assert __import__("sys").path[0] == str(tmp_path / "skinlib-src")


def test_a_chapter_opened_without_data_renders_the_best_committed_bundle(tmp_path, monkeypatch):
    """papermill or Binder without the 3 GB: the chapter renders the most complete committed bundle (its profile),
    trains nothing, and says so; `none` asks for training and gets the usual missing-data error."""
    from skinlib.book import session
    from skinlib.data.paths import ISIC_TEST_ENV
    from skinlib.policy import ENV
    from skinlib.runs import RUNS_ENV

    for key in (DATA_ENV, ISIC_TEST_ENV, *ENV.values(), RUNS_ENV, *dl.CLOUD_ENV):
        monkeypatch.setenv(key, "")  # recorded, so whatever open_session exports is undone
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("skinlib.data.paths.project_root", lambda: None)
    monkeypatch.setattr(session, "project_root", lambda: ROOT)
    best = session.best_bundle(ROOT / "results")
    assert best is not None and best.name in session.BUNDLE_ORDER
    profile = session.open_session(profile="smoke", runs_dir=str(tmp_path / "runs"))
    assert profile == best.name and os.environ[ENV["train"]] == "1"
    assert any((tmp_path / "runs").iterdir()) and os.environ[DATA_ENV]  # the bundle's data summary
    for key in (*ENV.values(), DATA_ENV, ISIC_TEST_ENV):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(FileNotFoundError, match="skinlib data download"):
        session.open_session(profile="smoke", bundle="none")
    with pytest.raises(ValueError, match="is not a folder; valid: 'auto'"):
        session.open_session(profile="smoke", bundle=str(tmp_path / "nowhere"))


def test_ensure_data_honours_the_data_dir_parameter(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv(DATA_ENV, "")  # recorded as unset: whatever the test sets is undone
    monkeypatch.delenv(DATA_ENV)
    for key in dl.CLOUD_ENV:
        monkeypatch.delenv(key, raising=False)
    assert dl.ensure_data(data_dir=data_dir) == data_dir.resolve()
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "elsewhere")):
        dl.ensure_data(data_dir=tmp_path / "elsewhere")  # named, not replaced by the default data


def test_ensure_data_downloads_only_in_a_cloud_session(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ENV, "")  # recorded as unset: whatever the test sets is undone
    monkeypatch.delenv(DATA_ENV)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("skinlib.data.paths.project_root", lambda: None)
    for key in dl.CLOUD_ENV:
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(FileNotFoundError, match="skinlib data download"):
        dl.ensure_data()
    srv = serve(fixture_files())
    url = srv.start()
    monkeypatch.setenv("BINDER_SERVICE_HOST", "10.0.0.1")
    try:
        path = dl.ensure_data(mirror=url)
    finally:
        srv.stop()
    assert path == tmp_path / "data" and (path / "ham10000" / "HAM10000_metadata.csv").is_file()
    assert os.environ[DATA_ENV] == str(path)


def test_jupyter_book_alone_refuses_a_book_without_executed_chapters(tmp_path):
    from types import SimpleNamespace

    from sphinx.errors import ExtensionError

    from skinlib.book.launch import _require_executed_chapters

    app = SimpleNamespace(srcdir=str(tmp_path))
    with pytest.raises(ExtensionError, match="skinlib book --profile smoke"):
        _require_executed_chapters(app)
    (tmp_path / "book" / "executed").mkdir(parents=True)
    (tmp_path / "book" / "executed" / "01_data.ipynb").write_text("{}")
    _require_executed_chapters(app)  # executed: the build goes on


def test_the_repository_is_one_setting_a_fork_changes(tmp_path):
    """A fork sets _config.yml's repository and runs `skinlib notebooks repository`: every install cell,
    pyproject's URLs, CITATION.cff and the teachers page follow; `--check` says when they do not."""
    import shutil

    from skinlib.book.cells import REPOSITORY_FILES, sync_repository

    root = tmp_path / "fork"
    (root / "book").mkdir(parents=True)
    shutil.copytree(ROOT / "notebooks", root / "notebooks")
    for name in ("_config.yml", *REPOSITORY_FILES):
        shutil.copy(ROOT / name, root / name)
    assert sync_repository(root, write=False) == []  # this repository is in step with itself
    config = (root / "_config.yml").read_text().replace("https://github.com/skinlib/skinlib",
                                                         "https://github.com/a-fork/skinlib")
    (root / "_config.yml").write_text(config.replace("branch: main", "branch: teaching"))
    stale = sync_repository(root, write=True)
    assert "pyproject.toml" in stale and "CITATION.cff" in stale and "notebooks/02_baselines.ipynb" in stale
    assert sync_repository(root, write=False) == []
    cell = next(c for c in nbformat.read(root / "notebooks" / "02_baselines.ipynb", as_version=4).cells
                if "install" in c.metadata.get("tags", []))
    assert "git+https://github.com/a-fork/skinlib@teaching" in cell.source
    assert 'Repository = "https://github.com/a-fork/skinlib"' in (root / "pyproject.toml").read_text()
    assert "github.com/skinlib/skinlib" not in (root / "CITATION.cff").read_text()
