"""What a chapter opened on its own works from: papermill, Binder, Colab, a notebook server.

``skinlib book`` prepares the data, the run store and (rendering a results bundle) switches training off before
it executes a chapter. A chapter opened any other way calls :func:`open_session` from its hidden install cell,
which does the same from the chapter's ``bundle`` parameter: with the data at hand the chapter trains (or reuses)
its runs; without it, it renders the most complete results bundle committed to the repository instead of
failing or fetching 3 GB, and says so; only a cloud session with no bundle fetches the data.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from skinlib.book.build import book_workspace
from skinlib.data.download import ensure_data, in_cloud
from skinlib.data.index import find_ham10000_metadata
from skinlib.data.paths import project_root, resolve_data_dir
from skinlib.policy import current as current_policy
from skinlib.study.unpack import read_bundle, unpack

log = logging.getLogger(__name__)

BUNDLE_ORDER: tuple[str, ...] = ("paper", "gpu", "cpu", "smoke")
"""Committed bundles, most complete first: the first whose ``bundle.json`` says complete is the best one."""

BUNDLE_CHOICES = "'auto' (the data if present, else the best committed bundle), 'none' (train), or a bundle folder"


def best_bundle(results: Path | None = None) -> Path | None:
    """The most complete committed results bundle (:data:`BUNDLE_ORDER`), or None when the repository has none."""
    root = results if results is not None else (project_root() or Path.cwd()) / "results"
    for name in BUNDLE_ORDER:
        meta = root / name / "bundle.json"
        try:
            if json.loads(meta.read_text(encoding="utf-8")).get("complete") is True:
                return root / name
        except (OSError, ValueError):
            continue
    return None


def _have_data(data_dir: str) -> bool:
    """Whether the HAM10000 metadata is where the data is looked for (a data folder, not only its name)."""

    try:
        find_ham10000_metadata(resolve_data_dir(data_dir or None))
        return True
    except (FileNotFoundError, ValueError):
        return False


def open_session(*, profile: str, data_dir: str = "", runs_dir: str = "", bundle: str = "auto") -> str:
    """Prepare a chapter run outside ``skinlib book`` and return the profile to run it with.

    ``bundle``: ``"auto"`` uses the data when present, else renders :func:`best_bundle` (switching the
    profile to the bundle's); ``"none"`` always trains (a cloud session fetches the data, elsewhere a missing
    data set is the usual error); a folder renders that bundle. Inside ``skinlib book`` (its environment already
    set) nothing is done.
    """

    bundle = bundle or "auto"
    if not current_policy().train:  # `skinlib book --from-results` set everything up
        return profile
    if bundle not in ("auto", "none") and not Path(bundle).is_dir():
        raise ValueError(f"bundle {bundle!r} is not a folder; valid: {BUNDLE_CHOICES}")
    if bundle == "none" or (bundle == "auto" and _have_data(data_dir)):
        ensure_data(data_dir=data_dir or None)
        return profile
    source = Path(bundle) if bundle != "auto" else best_bundle()
    if source is None:
        if in_cloud():
            ensure_data(data_dir=data_dir or None)  # fetches it
            return profile
        raise FileNotFoundError("no HAM10000 data here and no committed results bundle to render instead: get the "
                                "data with `skinlib data download` (README: Data), or pass -p bundle FOLDER")
    return _render(source, data_dir=data_dir, runs_dir=runs_dir, asked=profile)


def _render(source: Path, *, data_dir: str, runs_dir: str, asked: str) -> str:
    """Unpack ``source`` into the run store, read the data from its summary when there is none (as
    ``skinlib book --from-results`` does: :func:`~skinlib.book.build.book_workspace`), train nothing."""

    meta = read_bundle(source, verify=False)  # unpack verifies every file
    workspace = book_workspace(data_dir or None if _have_data(data_dir) else None, source, runs_dir=runs_dir or None)
    unpack(source, **workspace.where)
    os.environ.update({**workspace.env(), **current_policy().replace(train=False).env()})
    profile = str(meta["profile"])
    if profile != asked:
        log.warning("no data here: rendering the committed results bundle %s (profile %s, not %s); training is "
                    "off. Get the data (`skinlib data download`) to train the %s profile", source.name, profile,
                    asked, asked)
    return profile
