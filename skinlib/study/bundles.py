"""Results bundles: the small, committed outcome of a profile's runs, rendered anywhere without training.

A bundle ``results/<profile>/`` holds, per finished run, what the chapters read: its
config, data fingerprint, history, metrics, predictions (internal test and ISIC 2018
test), and what chapter 06 draws from a trained model (Grad-CAM scores, 8-bit maps
of a few examples), but no weights. Text stays text (YAML, JSON, the history CSV);
the long per-image tables are gzip-compressed CSV and the splits, shared by most runs,
are stored once. ``bundle.json`` lists every file with its SHA-256 and says when,
where (device, versions) and with which parameters the runs were made.

``unpack`` restores the runs into a run store, marked as bundled
(:data:`~skinlib.runs.BUNDLE_MARKER`), after checking that the local data has the
fingerprint the runs were trained on; the store then treats them as finished.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import subprocess
import tempfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from skinlib.data.snapshot import ATTRIBUTION, LICENCE, write_snapshot
from skinlib.io import atomic_write_json, file_digest, make_shareable, replace_dir, temporary_env
from skinlib.runs import BUNDLE_MARKER, DATA_FILE, NO_TRAIN_ENV, Run, RunConfig, runs_root

log = logging.getLogger(__name__)

BUNDLE_FILE = "bundle.json"
DATA_FOLDER = "data"  # the data summary (snapshot) a bundle carries
FORMAT = 1
MAX_BYTES = 10 * 1024 * 1024  # per profile, committed with the code
PLAIN_FILES = ("config.yaml", DATA_FILE, "history.csv", "metrics.json", "isic2018_metrics.json")
GZIP_FILES = ("predictions.csv", "isic2018_predictions.csv", "gradcam_scores.csv")
BINARY_FILES = ("gradcam_examples.npz",)
# the Grad-CAM examples kept for chapter 06's grid (its `examples` parameter may ask for up to this many)
CAM_EXAMPLES = 6


class BundleError(ValueError):
    """A bundle that cannot be used as it is: damaged, incomplete, too large or made on other data."""


def results_root(root: str | os.PathLike | None = None) -> Path:
    """``results/`` in the project (or the working directory)."""
    from skinlib.data.paths import project_root

    if root is not None:
        return Path(root)
    base = project_root()
    return (base if base is not None else Path.cwd()) / "results"


def bundle_dir(profile: str, root: str | os.PathLike | None = None) -> Path:
    return results_root(root) / profile


def _gzip(src: Path, dst: Path) -> None:
    """Deterministic gzip (no name, no time stamp), so an unchanged file packs to the same bytes."""
    with open(src, "rb") as fin, open(dst, "wb") as raw, gzip.GzipFile(
            filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as fout:
        shutil.copyfileobj(fin, fout)


COMMIT_ENV = "SKINLIB_GIT_COMMIT"  # the commit of a copy without .git (a staged GPU window), set by whoever copied it


def git_commit() -> str:
    """The commit this code is from: :data:`COMMIT_ENV` when set, else ``git rev-parse`` in this project's own
    ``.git`` (never a repository above it), else ``"unknown"``; ``-dirty`` when tracked files were changed."""
    from skinlib.data.paths import project_root

    given = os.environ.get(COMMIT_ENV, "").strip()
    if given:
        return given if re.fullmatch(r"[0-9a-f]{7,40}(-dirty)?", given) else "unknown"
    root = project_root()
    if root is None or not (root / ".git").exists():
        return "unknown"
    env = {**os.environ, "GIT_DIR": str(root / ".git"), "GIT_WORK_TREE": str(root),
           "GIT_CEILING_DIRECTORIES": str(root.parent)}
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10, env=env)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=20, env=env)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = head.stdout.strip()
    if head.returncode or not re.fullmatch(r"[0-9a-f]{7,40}", commit):
        return "unknown"
    return commit + ("-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def _without_folders(value: Any) -> Any:
    """A JSON value whose ``source`` entries (the data files a run read: data.json, metrics.json) keep only their
    file names."""
    if isinstance(value, dict):
        return {k: Path(v).name if k == "source" and isinstance(v, str) else _without_folders(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_without_folders(v) for v in value]
    return value


def _copy_public_json(src: Path, dst: Path) -> None:
    """Copy a run's JSON file into a bundle without the machine's folders (a committed bundle names none)."""
    dst.write_text(json.dumps(_without_folders(json.loads(src.read_text())), indent=2, sort_keys=True) + "\n")


@dataclass
class PackResult:
    path: Path
    runs: list[str]
    bytes: int


def _check_pack_target(out: Path, profile: str) -> None:
    """Packing replaces ``out`` as a whole: refuse a file, a link, or a non-empty folder that is not a bundle of
    the same profile (a slip such as ``--out results`` would otherwise delete every other bundle)."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise BundleError(f"cannot pack into {out}: it is a file or a link, not a folder; choose a new folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    try:
        found = json.loads((out / BUNDLE_FILE).read_text(encoding="utf-8")).get("profile")
    except (OSError, ValueError, AttributeError):
        found = None
    if found != profile:
        held = ", ".join(sorted(p.name for p in out.iterdir())[:5])
        what = f"the bundle of profile {found!r}" if found else f"files that are not a results bundle ({held})"
        raise BundleError(f"refusing to pack profile {profile} into {out}: it holds {what}, which packing would "
                          f"delete; choose a new or empty folder (the default is results/{profile})")


def _weights_digest(config: RunConfig) -> str | None:
    """The SHA-256 of the ImageNet weight file a pre-trained run started from, when it is still here."""
    from skinlib.models.weights import expected_weights_file

    try:
        path = expected_weights_file(config.model)
    except ValueError:
        return None
    return file_digest(path) if path.is_file() else None


def _source_image_size(index: Any) -> list[int]:
    """Width and height of the data's first image: the resolution the runs' images were resized from."""
    from PIL import Image

    with Image.open(index["path"].iloc[0]) as im:
        return list(im.size)


def drawn_images(runs: Sequence[Run], index: Any, *, data_dir: str | os.PathLike | None = None
                 ) -> tuple[set[str], set[str]]:
    """The HAM10000 images the chapters draw (the data chapter's montage; the Grad-CAM examples and the error
    gallery of each run that kept Grad-CAM examples, i.e. the final model) and those drawn with their mask."""
    import numpy as np

    from skinlib.data import montage_rows
    from skinlib.explain import CAM_EXAMPLES_FILE
    from skinlib.inference import held_out_index
    from skinlib.study.experiments import error_rows

    images = set(montage_rows(index)["image_id"])
    masks: set[str] = set()
    for run in runs:
        if not run.file(CAM_EXAMPLES_FILE).is_file():
            continue
        with np.load(run.file(CAM_EXAMPLES_FILE)) as kept:
            rows = kept["rows"].astype(int)
        if len(rows):
            shown = set(held_out_index(run, data_dir).iloc[rows]["image_id"])
            images |= shown | set(error_rows(run)["image_id"])
            masks |= shown
    return images, masks


def write_data_summary(dest: Path, runs: Sequence[Run], *, data_dir: str | os.PathLike | None = None) -> list[int]:
    """Write into the new folder ``dest`` the data snapshot a bundle carries (:mod:`skinlib.data.snapshot`), its
    tables gzipped: every HAM10000 row with its file's digest, the ISIC 2018 test labels when that set is here,
    and the images (and masks) of :func:`drawn_images`; return the data's source image size."""
    from skinlib.data import load_ham10000, load_isic2018_test
    from skinlib.data.index import find_isic2018_test_dir

    try:
        find_isic2018_test_dir(data_dir)
        isic = load_isic2018_test(data_dir)
    except FileNotFoundError:
        log.warning("no ISIC 2018 test set here: the bundle's data summary lacks its labels")
        isic = None
    ham = load_ham10000(data_dir)
    images, masks = drawn_images(runs, ham, data_dir=data_dir)
    staging = dest.with_name(f".{dest.name}.staging")
    try:
        written = write_snapshot(staging, ham=ham, isic=isic, images=images, masks=masks,
                                 mask_dir=data_dir)
        dest.mkdir()
        for name in written:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            if name.endswith(".csv"):
                _gzip(staging / name, dest / f"{name}.gz")
            else:
                shutil.copyfile(staging / name, dest / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _source_image_size(ham)


def _pack_one(run: Run, tmp: Path) -> dict[str, Any]:
    """Copy one run's shareable files into the bundle being written in ``tmp`` (its split once, by digest, under
    ``splits/``); return its entry of ``bundle.json``."""
    folder = tmp / "runs" / run.path.name
    folder.mkdir(parents=True)
    for name in PLAIN_FILES:
        if run.file(name).is_file():
            if name.endswith(".json"):
                _copy_public_json(run.file(name), folder / name)
            else:
                shutil.copyfile(run.file(name), folder / name)
    for name in GZIP_FILES:
        if run.file(name).is_file():
            _gzip(run.file(name), folder / f"{name}.gz")
    for name in BINARY_FILES:
        if run.file(name).is_file():
            shutil.copyfile(run.file(name), folder / name)
    split_tmp = tmp / "split.csv.gz"
    _gzip(run.file("split.csv"), split_tmp)
    split = Path("splits") / f"{file_digest(run.file('split.csv'))[:16]}.csv.gz"
    (tmp / "splits").mkdir(exist_ok=True)
    os.replace(split_tmp, tmp / split)
    env = run.metrics().get("environment", {})
    return {"folder": run.path.name, "split": split.as_posix(), "data_key": run.data()["key"],
            "finished_utc": env.get("finished_utc"), "device": env.get("gpu") or env.get("device"),
            "torch": env.get("torch"), "skinlib": env.get("skinlib"),
            "image_size": run.config.image_size, "pretrained": run.config.pretrained,
            "weights_sha256": _weights_digest(run.config) if run.config.pretrained else None}


def pack_runs(runs: Sequence[Run], out: str | os.PathLike, *, profile: str,
              parameters: dict[str, Any] | None = None, max_bytes: int = MAX_BYTES,
              missing: Sequence[str] | None = None, data_dir: str | os.PathLike | None = None,
              with_data: bool = True, not_derived: dict[str, str] | None = None) -> PackResult:
    """Write the bundle of finished ``runs`` to ``out`` (replaced as a whole, never half-written).

    ``missing`` names the profile's runs not in it (a partial bundle); ``bundle.json`` records them and
    ``"complete": true`` only when there are none (``None``: not known, recorded as incomplete).
    ``with_data``: the bundle carries the data summary its chapters read (:func:`write_data_summary`, from
    the data in ``data_dir``), so it renders where the data is absent. ``not_derived`` names, per run folder,
    what could not be derived from its weights and why (``bundle.json``'s ``not_derived``).
    """
    out = Path(out)
    if not runs:
        raise BundleError(f"no finished runs to pack into {out}")
    for run in runs:
        if not run.finished:
            raise BundleError(f"run {run.path} is not finished; train it before packing")
        run.check_complete()
    _check_pack_target(out, profile)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        entries = [_pack_one(run, tmp) for run in sorted(runs, key=lambda r: r.path.name)]
        devices = {e["device"] or "unknown" for e in entries}
        source_size = write_data_summary(tmp / DATA_FOLDER, runs, data_dir=data_dir) if with_data else None
        files = {p.relative_to(tmp).as_posix(): file_digest(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        size = sum((tmp / f).stat().st_size for f in files)
        if size > max_bytes:
            biggest = sorted(files, key=lambda f: (tmp / f).stat().st_size, reverse=True)[:3]
            raise BundleError(f"the bundle of {len(runs)} runs would take {size / 2**20:.1f} MB, over the "
                              f"{max_bytes / 2**20:.0f} MB limit (largest: {', '.join(biggest)}); pack fewer runs")
        finished = sorted(e["finished_utc"] for e in entries if e["finished_utc"])
        meta = {"format": FORMAT, "profile": profile, "parameters": parameters or {},
                "packed_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "runs_finished_utc": [finished[0], finished[-1]] if finished else None,
                "devices": sorted(devices), "git_commit": git_commit(), "runs": entries, "files": files,
                "complete": missing is not None and not missing, "missing": sorted(missing or []),
                "not_derived": dict(sorted((not_derived or {}).items()))}
        if with_data:
            meta["data"] = {"licence": LICENCE, "attribution": ATTRIBUTION,
                            "source_image_size": source_size}
        atomic_write_json(tmp / BUNDLE_FILE, meta)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("packed %d runs into %s (%.2f MB)", len(runs), out, size / 2**20)
    return PackResult(out, [e["folder"] for e in entries], size)


# what an unpacked bundle may make a reader's machine do, at most: bundles are untrusted input
MAX_EXPANDED_FILE = 64 * 1024 * 1024  # one gunzipped table
MAX_EXPANDED = 512 * 1024 * 1024  # all of a bundle's tables gunzipped
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}")
_SPLIT_FILE = re.compile(r"splits/[0-9a-f]{16}\.csv\.gz")
_DIGEST = re.compile(r"[0-9a-f]{64}")
_DATA_FILE = re.compile(r"data/(?:SNAPSHOT\.json|README\.md|HAM10000_metadata\.csv\.gz"
                        r"|isic2018_task3_test/ISIC2018_Task3_Test_GroundTruth\.csv\.gz"
                        r"|images/[A-Za-z0-9_-]{1,64}\.(?:jpg|jpeg|png)|masks/[A-Za-z0-9_-]{1,64}_segmentation\.png)")
RUN_FILES = frozenset({*PLAIN_FILES, *(f"{n}.gz" for n in GZIP_FILES), *BINARY_FILES})
REQUIRED_RUN_FILES = ("config.yaml", DATA_FILE, "history.csv", "metrics.json", "predictions.csv.gz")


def _plain_name(value: Any) -> bool:
    """A single file-system name: no separators, no ``..``, not absolute, nothing hidden."""
    return isinstance(value, str) and _PLAIN_NAME.fullmatch(value) is not None and ".." not in value


def _check_meta(meta: Any, meta_file: Path) -> dict[str, Any]:
    """Refuse a ``bundle.json`` whose shape is not the one :func:`pack_runs` writes, naming the offending field."""
    def bad(what: str) -> BundleError:
        return BundleError(f"{meta_file} is not a valid results bundle: {what}; restore it from git or pack again")

    if not isinstance(meta, dict):
        raise bad(f"it holds {type(meta).__name__}, not a mapping")
    if meta.get("format") != FORMAT:
        raise BundleError(f"{meta_file} has format {meta.get('format')!r}; this skinlib reads format {FORMAT}")
    if not _plain_name(meta.get("profile")):
        raise bad(f"profile {meta.get('profile')!r} is not a plain name")
    files, runs = meta.get("files"), meta.get("runs")
    if not isinstance(files, dict) or not files:
        raise bad("no 'files' listing (file: SHA-256)")
    if not isinstance(runs, list) or not runs:
        raise bad("no 'runs' list")
    folders = set()
    for i, entry in enumerate(runs):
        if not isinstance(entry, dict):
            raise bad(f"runs[{i}] is not a mapping")
        for key in ("folder", "split", "data_key"):
            if not isinstance(entry.get(key), str):
                raise bad(f"runs[{i}] has no {key!r}")
        if not _plain_name(entry["folder"]):
            raise bad(f"runs[{i}] names the folder {entry['folder']!r}; a run folder is a single plain name "
                      f"(no '/', '..' or absolute path)")
        if entry["folder"] in folders:
            raise bad(f"run folder {entry['folder']!r} is listed twice")
        folders.add(entry["folder"])
        if not _SPLIT_FILE.fullmatch(entry["split"]) or entry["split"] not in files:
            raise bad(f"runs[{i}] ({entry['folder']}) names the split {entry['split']!r}, which is not a listed "
                      f"splits/<16 hex>.csv.gz file")
        missing = [n for n in REQUIRED_RUN_FILES if f"runs/{entry['folder']}/{n}" not in files]
        if missing:
            raise bad(f"run {entry['folder']} lacks {', '.join(missing)}")
    for name, digest in files.items():
        parts = name.split("/") if isinstance(name, str) else []
        ok = (len(parts) == 3 and parts[0] == "runs" and parts[1] in folders and parts[2] in RUN_FILES) or \
            (isinstance(name, str) and (_SPLIT_FILE.fullmatch(name) or _DATA_FILE.fullmatch(name)) is not None)
        if not ok:
            raise bad(f"it lists the file {name!r}, which is neither runs/<listed run>/<one of "
                      f"{', '.join(sorted(RUN_FILES))}>, splits/<16 hex>.csv.gz nor a data summary file "
                      f"(data/HAM10000_metadata.csv.gz, data/images/<image id>.jpg, ...)")
        if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
            raise bad(f"the checksum of {name} is not a SHA-256 hex digest")
    return meta


def _regular_file(path: Path, root: Path) -> int:
    """The size of ``path``, a regular file inside ``root`` reached without symbolic links; else BundleError."""
    rel = path.relative_to(root)
    here = root
    for part in rel.parts:
        here = here / part
        try:
            st = here.lstat()
        except FileNotFoundError:
            raise BundleError(f"{path} is listed in {root / BUNDLE_FILE} but missing; restore it from git or "
                              f"pack again") from None
        if stat.S_ISLNK(st.st_mode):
            raise BundleError(f"{here} is a symbolic link; a results bundle holds only plain files (links could "
                              f"point anywhere on this machine); restore it from git or pack again")
    if not stat.S_ISREG(st.st_mode):
        raise BundleError(f"{path} is not a regular file; restore it from git or pack again")
    return st.st_size


def read_bundle(path: str | os.PathLike, *, verify: bool = True, max_bytes: int | None = None) -> dict[str, Any]:
    """The bundle's ``bundle.json``, checked as untrusted input: its shape, names and sizes, and, when
    ``verify``, every listed file's checksum (files the listing does not name are never read)."""
    path = Path(path)
    meta_file = path / BUNDLE_FILE
    if not meta_file.is_file() or meta_file.is_symlink():
        raise BundleError(f"{path} is not a results bundle (no {BUNDLE_FILE}); make one where the runs are "
                          f"(`skinlib results pack --profile PROFILE`), or train them in a GPU window "
                          f"(`python3 benchmarks/gpu_window.py run OUT`) and unpack its archive into results/")
    if meta_file.stat().st_size > 1024 * 1024:
        raise BundleError(f"{meta_file} is over 1 MB, far more than a bundle's listing; restore it from git")
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{meta_file} is damaged ({exc}); restore it from git") from exc
    meta = _check_meta(meta, meta_file)
    max_bytes = MAX_BYTES if max_bytes is None else max_bytes
    sizes = {name: _regular_file(path / name, path) for name in meta["files"]}
    total = sum(sizes.values())
    if total > max_bytes:
        raise BundleError(f"{path} lists {total / 2**20:.1f} MB of files, over the {max_bytes / 2**20:.0f} MB "
                          f"a results bundle may hold; it was not made by `skinlib results pack`")
    if verify:
        for name, digest in meta["files"].items():
            if file_digest(path / name) != digest:
                raise BundleError(f"{path / name} does not match its checksum in {meta_file} (changed or "
                                  f"damaged); restore it from git or pack again")
    unlisted = sorted(p.relative_to(path).as_posix() for p in (path / "runs").rglob("*")
                      if not p.is_dir() and p.relative_to(path).as_posix() not in meta["files"]) \
        if (path / "runs").is_dir() and not (path / "runs").is_symlink() else []
    if unlisted:
        log.warning("%s: ignoring %d file(s) that %s does not list: %s", path, len(unlisted), BUNDLE_FILE,
                    ", ".join(unlisted[:5]))
    return meta


def data_snapshot(source: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None) -> Path:
    """The data summary of a bundle (:mod:`skinlib.data.snapshot`) as a folder to use as the data directory,
    made once per content in the cache folder from the verified bundle (tables gunzipped, capped).

    Raises :class:`BundleError` when the bundle carries no data summary (packed before bundles had one).
    """
    from skinlib.data.cache import cache_folder
    from skinlib.data.snapshot import SNAPSHOT_FILE

    path = Path(source)
    meta = read_bundle(path)
    files = {name: digest for name, digest in meta["files"].items() if name.startswith(f"{DATA_FOLDER}/")}
    if f"{DATA_FOLDER}/{SNAPSHOT_FILE}" not in files or f"{DATA_FOLDER}/HAM10000_metadata.csv.gz" not in files:
        raise BundleError(f"{path} carries no data summary (it was packed before bundles had one), so it renders "
                          f"only where the data is: get the data (`skinlib data download`) and point "
                          f"SKINLIB_DATA_DIR at it, or pack the bundle again where its runs and the data are "
                          f"(`skinlib results pack --profile {meta['profile']}`)")
    key = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]
    root = cache_folder(cache_dir) / "snapshots"
    target = root / key
    if (target / SNAPSHOT_FILE).is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".tmp", dir=root))
    try:
        budget = _Budget(MAX_EXPANDED)
        for name in files:
            leaf = tmp / name[len(DATA_FOLDER) + 1:]
            leaf.parent.mkdir(parents=True, exist_ok=True)
            if name.endswith(".gz"):
                _gunzip_capped(path / name, leaf.with_suffix(""), budget)
            else:
                shutil.copyfile(path / name, leaf)
                if leaf.suffix.lower() in IMAGE_SUFFIXES:
                    _check_summary_image(leaf, path / name)
        make_shareable(tmp)
        if target.exists():  # a damaged earlier attempt (no SNAPSHOT.json)
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:  # made meanwhile by another process: the same content
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("data summary of %s in %s", path, target)
    return target


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MAX_SUMMARY_PIXELS = 4_000_000
"""The largest image a data summary may carry (its images are HAM10000's, 600 x 450 at most)."""


def _check_summary_image(path: Path, shown: Path) -> None:
    """A data summary's image must decode and stay within :data:`MAX_SUMMARY_PIXELS` (a decompression bomb or a
    damaged file is refused, naming it, before any chapter opens it)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_SUMMARY_PIXELS:
                raise BundleError(f"{shown} is {im.width} x {im.height} pixels, more than a data summary's images "
                                  f"have ({MAX_SUMMARY_PIXELS:,} at most); the bundle was not made by `skinlib "
                                  f"results pack`")
            im.load()
    except BundleError:
        raise
    except Exception as exc:  # any decoding failure of an untrusted file
        raise BundleError(f"{shown} does not decode as an image ({type(exc).__name__}); restore the bundle from git "
                          f"or pack it again") from None


@dataclass
class UnpackResult:
    restored: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


def _local_data_key(config: RunConfig, data_dir: str | os.PathLike | None, memo: dict) -> tuple[str, str]:
    from skinlib.data.selection import select_data

    key = (config.subset, config.split_seed)
    if key not in memo:
        try:
            selection = select_data(data_dir, subset=config.subset, seed=config.split_seed)
            memo[key] = (selection.fingerprint.key, selection.fingerprint.describe())
        except ValueError as exc:  # e.g. a subset this data is too small for: certainly other data
            memo[key] = ("", f"no such selection ({exc})")
    return memo[key]


class _Budget:
    """What gunzipping a bundle may still write, in bytes."""

    def __init__(self, total: int) -> None:
        self.left = total


def _gunzip_capped(src: Path, dst: Path, budget: _Budget) -> None:
    """Gunzip ``src`` to ``dst``, refusing a member that expands beyond :data:`MAX_EXPANDED_FILE` or the
    bundle's budget."""
    written, limit = 0, MAX_EXPANDED_FILE
    try:
        with gzip.open(src, "rb") as fin, open(dst, "wb") as fout:
            while block := fin.read(1 << 20):
                written += len(block)
                if written > limit or written > budget.left:
                    raise BundleError(f"{src} expands to more than {min(limit, budget.left) / 2**20:.0f} MB; a "
                                      f"results bundle's tables are far smaller (a compression bomb?); restore it "
                                      f"from git or pack again")
                fout.write(block)
    except (OSError, EOFError, zlib.error) as exc:
        raise BundleError(f"{src} is not a valid gzip file ({exc}); restore it from git or pack again") from exc
    budget.left -= written


def _check_npz(src: Path) -> None:
    """An ``.npz`` of plain arrays whose expanded size is within the cap (arrays are loaded without pickle)."""
    import zipfile

    try:
        with zipfile.ZipFile(src) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise BundleError(f"{src} is not a valid .npz archive ({exc}); restore it from git or pack again") from exc
    odd = [i.filename for i in infos if not _plain_name(i.filename) or not i.filename.endswith(".npy")]
    if odd:
        raise BundleError(f"{src} holds members other than plain .npy arrays ({', '.join(odd[:3])}); refused")
    if sum(i.file_size for i in infos) > MAX_EXPANDED_FILE:
        raise BundleError(f"{src} expands to more than {MAX_EXPANDED_FILE / 2**20:.0f} MB; refused")


def _restore_run(path: Path, entry: dict[str, Any], meta: dict[str, Any], tmp: Path, budget: _Budget) -> None:
    """Copy one run's listed files from the bundle into ``tmp`` (gunzipping the tables) and mark it bundled."""
    prefix = f"runs/{entry['folder']}/"
    for name in meta["files"]:
        if not name.startswith(prefix):
            continue
        src, leaf = path / name, name[len(prefix):]
        if leaf.endswith(".gz"):
            _gunzip_capped(src, tmp / leaf[:-3], budget)
        else:
            if leaf.endswith(".npz"):
                _check_npz(src)
            shutil.copyfile(src, tmp / leaf)
    _gunzip_capped(path / entry["split"], tmp / "split.csv", budget)
    atomic_write_json(tmp / BUNDLE_MARKER, {"bundle": meta["profile"], "packed_utc": meta.get("packed_utc"),
                                            "git_commit": meta.get("git_commit")})


def _open_bundled_run(run_path: Path, entry: dict[str, Any], bundle: Path) -> RunConfig:
    """The config of a bundled run, checked against the run's folder name (its identity) and data key."""
    from skinlib.runs import run_hash

    try:
        config = Run.open(run_path).config
        data = json.loads((run_path / DATA_FILE).read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:  # RunFileError, a bad field, bad JSON
        raise BundleError(f"run {entry['folder']} of {bundle} is damaged: {exc}") from exc
    if not isinstance(data, dict) or data.get("key") != entry["data_key"]:
        raise BundleError(f"run {entry['folder']} of {bundle}: its {DATA_FILE} does not carry the data key "
                          f"{entry['data_key']} that {BUNDLE_FILE} lists; restore it from git or pack again")
    expected = f"{config.name}-{run_hash(config, entry['data_key'])}"
    if entry["folder"] != expected:
        raise BundleError(f"run {entry['folder']} of {bundle} is not the run its config.yaml and data key "
                          f"describe ({expected}); restore it from git or pack again")
    return config


def unpack(source: str | os.PathLike, *, data_dir: str | os.PathLike | None = None,
           runs_dir: str | os.PathLike | None = None) -> UnpackResult:
    """Restore a bundle's runs into the run store (``source``: a profile name or a bundle folder).

    The bundle is untrusted: its listing, names and sizes are checked (:func:`read_bundle`), each run's
    folder must be the name its config and data key give, and the local data's fingerprint must be the
    one a run was trained on; any failure refuses the bundle before anything is written. Runs already
    finished in the store are left as they are; each restored run is built in a temporary folder in the
    store and only then takes the place of an unfinished local attempt.
    """
    path = Path(source) if Path(source).is_dir() or os.sep in str(source) else bundle_dir(str(source))
    meta = read_bundle(path)
    memo: dict = {}
    configs = {}
    for entry in meta["runs"]:
        run_path = path / "runs" / entry["folder"]
        config = _open_bundled_run(run_path, entry, path)
        local, described = _local_data_key(config, data_dir, memo)
        if local != entry["data_key"]:
            data = json.loads((run_path / DATA_FILE).read_text())
            raise BundleError(
                f"{path} was computed on other data than the data here: run {entry['folder']} was trained on "
                f"{data.get('images')} images / {data.get('lesions')} lesions (data key {entry['data_key']}), the "
                f"data here gives {described}; point SKINLIB_DATA_DIR (or --data-dir) at the same HAM10000 copy, "
                f"or train the profile here instead of unpacking")
        configs[entry["folder"]] = config
    store = runs_root(runs_dir)
    store.mkdir(parents=True, exist_ok=True)
    result = UnpackResult(meta=meta)
    budget = _Budget(MAX_EXPANDED)
    for entry in meta["runs"]:
        target = store / entry["folder"]
        if target.parent != store:  # cannot happen with a plain name; kept as the last line of defence
            raise BundleError(f"run folder {entry['folder']!r} does not resolve inside the run store {store}")
        if Run(target, configs[entry["folder"]]).finished:
            result.present.append(entry["folder"])
            continue
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry['folder']}.", suffix=".tmp", dir=store))
        try:
            make_shareable(tmp)  # mkdtemp makes 0700 folders; a shared store must stay readable
            _restore_run(path, entry, meta, tmp, budget)
            Run(tmp, configs[entry["folder"]]).check_complete()
            replace_dir(tmp, target)  # an unfinished local attempt is removed only after this run is complete
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        result.restored.append(entry["folder"])
    log.info("unpacked %s: %d runs restored, %d already in %s", path, len(result.restored), len(result.present),
             store)
    return result


def no_training() -> Any:
    """Context manager: inside it :func:`~skinlib.train.fit` reuses runs but never trains one (also in child
    processes, which inherit the environment)."""
    return temporary_env({NO_TRAIN_ENV: "1"})


@dataclass
class ProfileRuns:
    """The runs a profile's chapters use: the finished ones and the names of those still missing."""

    finished: list[Run]
    missing: list[RunConfig]
    final_known: bool  # False while the loss study is incomplete: the finals' runs (both recipes) are not known yet


def profile_runs(params: dict[str, Any], *, data_dir: str | os.PathLike | None = None,
                 runs_dir: str | os.PathLike | None = None) -> ProfileRuns:
    """Which of the book's runs for these profile parameters are in the store; trains nothing."""
    from skinlib.data.selection import select_data
    from skinlib.runs import MissingRunError
    from skinlib.study.experiments import independent_runs, profile_config, recipe_runs

    config = profile_config(params)
    configs = independent_runs(config, params["seeds"], pretrained=params["pretrained"])
    with no_training():
        try:
            configs += recipe_runs(config, params["seeds"], data_dir=data_dir, runs_dir=runs_dir)
            final_known = True
        except MissingRunError:
            final_known = False
    finished, missing, seen, keys = [], [], set(), {}
    for c in configs:
        if (c.subset, c.split_seed) not in keys:
            keys[c.subset, c.split_seed] = select_data(data_dir, subset=c.subset, seed=c.split_seed).fingerprint.key
        run = Run.for_config(c, keys[c.subset, c.split_seed], runs_dir)
        if run.path.name in seen:
            continue
        seen.add(run.path.name)
        (finished if run.finished else missing).append(run if run.finished else c)
    return ProfileRuns(finished, missing, final_known)


OPTIONAL_PACKAGES: dict[str, str] = {
    "pytorch_grad_cam": "Grad-CAM scores and maps (chapter 06; pip install grad-cam)",
}
"""Packages a window can do without, each with what is left out of the bundle when it is missing."""


def missing_optional() -> dict[str, str]:
    """The :data:`OPTIONAL_PACKAGES` that cannot be imported here, with what the bundle will lack."""
    import importlib.util

    def absent(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is None
        except (ImportError, ValueError):  # blocked (a None entry in sys.modules, a finder that refuses it)
            return True

    return {name: what for name, what in OPTIONAL_PACKAGES.items() if absent(name)}


def derive(params: dict[str, Any], *, data_dir: str | os.PathLike | None = None,
           runs_dir: str | os.PathLike | None = None, device: str = "auto",
           not_derived: dict[str, str] | None = None) -> list[str]:
    """Compute, while the weights are at hand, what chapter 06 draws from trained models: the final model's
    ISIC 2018 test predictions and Grad-CAM (scores and example maps), the baselines' Grad-CAM scores.

    Returns the run folders it touched; runs that are missing or bundled (no weights) are skipped. What could
    not be derived is recorded, per run folder, in ``not_derived`` (with why), never raised.
    """
    from skinlib.runs import MissingRunError
    from skinlib.study.experiments import make_study, profile_config, recipe_runs
    from skinlib.train import fit

    config, seeds = profile_config(params), params["seeds"]
    done = []
    with no_training():
        try:
            finals = [c for c in recipe_runs(config, seeds, data_dir=data_dir, runs_dir=runs_dir)
                      if c.seed == seeds[0]]
        except MissingRunError:
            finals = []
        baselines = make_study("baselines", config, seeds, pretrained=params["pretrained"])
        wanted = [(c, True) for c in finals] + [(c.replace(seed=seeds[0]), False)
                                                    for c in baselines.configs.values()]
        for c, final in wanted:
            try:
                run = fit(c, data_dir=data_dir, runs_dir=runs_dir)
            except MissingRunError:
                continue
            if run.bundled:
                continue
            why = derive_run(run, final=final, data_dir=data_dir, device=device)
            if why is None:
                done.append(run.path.name)
                if not_derived is not None:
                    not_derived.pop(run.path.name, None)
            elif not_derived is not None:
                not_derived[run.path.name] = why
    return done


def derive_run(run: Run, *, final: bool, data_dir: str | os.PathLike | None = None,
               device: str = "auto") -> str | None:
    """What chapter 06 draws from one trained run (ISIC 2018 predictions for the final model, Grad-CAM).
    Returns ``None`` when everything was derived, else what was left out and why: any failure (a missing
    optional package, missing masks, a damaged file, a CUDA error) is logged and returned, never raised, so the
    other runs are still packed."""
    from skinlib.data.index import find_isic2018_test_dir

    lacking = []
    if final:
        try:
            find_isic2018_test_dir(data_dir)
        except FileNotFoundError:
            lacking.append("ISIC 2018 predictions: no ISIC 2018 test set where the window ran")
        else:
            lacking += _derive_step("ISIC 2018 predictions", run, "evaluate_external", data_dir=data_dir,
                                    device=device)
    missing = missing_optional()
    if "pytorch_grad_cam" in missing:
        lacking.append("Grad-CAM: the package pytorch_grad_cam is not installed where the window ran")
    else:
        lacking += _derive_step("Grad-CAM", run, "cam_mask_scores", data_dir=data_dir, device=device,
                                examples=CAM_EXAMPLES if final else 0)
    for why in lacking:
        log.warning("%s is packed without %s", run.path.name, why)
    return "; ".join(lacking) or None


def _derive_step(what: str, run: Run, function: str, **kwargs: Any) -> list[str]:
    """Call ``skinlib.explain.cam_mask_scores`` or ``skinlib.inference.evaluate_external`` on ``run``; the
    reason it failed, if it did."""
    try:
        if function == "cam_mask_scores":
            from skinlib.explain import cam_mask_scores as step
        else:
            from skinlib.inference import evaluate_external as step
        step(run, **kwargs)
    except Exception as exc:  # an optional derivation: whatever goes wrong, the run is packed without it
        first = str(exc).splitlines()[0] if str(exc) else ""
        first = re.sub(r"(?:[A-Za-z]:)?[/\\][^\s'\"]*[/\\]([^/\\\s'\"]+)", r"\1", first)  # no machine folders
        return [f"{what}: {type(exc).__name__}: {first}"[:300]]
    return []


def pack_profile(profile: str, *, out: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None,
                 runs_dir: str | os.PathLike | None = None, device: str = "auto", allow_missing: bool = False,
                 **overrides: Any) -> PackResult:
    """Derive what the chapters need (:func:`derive`) and pack every finished run of ``profile`` into
    ``out`` (default ``results/<profile>``). Missing runs are an error naming them, unless
    ``allow_missing`` (a GPU window that made part of the runs)."""
    from skinlib.study.profiles import get_profile

    params = get_profile(profile, **overrides)
    derive(params, data_dir=data_dir, runs_dir=runs_dir, device=device)
    runs = profile_runs(params, data_dir=data_dir, runs_dir=runs_dir)
    if (runs.missing or not runs.final_known) and not allow_missing:
        raise BundleError(f"{len(runs.missing)} runs of profile {profile} are not finished: "
                          f"{', '.join(c.name for c in runs.missing) or 'the final model (loss study incomplete)'}; "
                          f"train them (skinlib book --profile {profile}, or benchmarks/gpu_window.py) or pass "
                          f"--allow-missing to pack the finished ones")
    missing = [f"{c.name} seed {c.seed}" for c in runs.missing]
    if not runs.final_known:
        missing.append("the final model (after the loss study)")
    return pack_runs(runs.finished, out or bundle_dir(profile), profile=profile, parameters=params, missing=missing,
                     data_dir=data_dir)
