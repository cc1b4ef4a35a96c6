"""Results bundles, the trust boundary: every check of a bundle as hostile input (its listing's shape, names and
sizes, each file's checksum, gzip and npz members, the data summary's images) and the only code that copies a
bundle's files into a run store or a data summary. Whatever a bundle holds, nothing is written outside the run
store or the cache, and nothing half-restored is left behind."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from skinlib.data.cache import cache_folder
from skinlib.data.selection import select_data
from skinlib.data.snapshot import SNAPSHOT_FILE
from skinlib.io import atomic_write_json, file_digest, make_shareable, replace_dir
from skinlib.runs import BUNDLE_MARKER, DATA_FILE, FILES, Run, RunConfig, run_hash, runs_root
from skinlib.study.bundle_format import (
    BUNDLE_FILE,
    DATA_FOLDER,
    FORMAT,
    MAX_BYTES,
    REQUIRED_RUN_FILES,
    RUN_FILES,
    BundleError,
    bundle_dir,
)

log = logging.getLogger(__name__)



# what an unpacked bundle may make a reader's machine do, at most: bundles are untrusted input
MAX_EXPANDED_FILE = 64 * 1024 * 1024  # one gunzipped table
MAX_EXPANDED = 512 * 1024 * 1024  # all of a bundle's tables gunzipped
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}")
_SPLIT_FILE = re.compile(r"splits/[0-9a-f]{16}\.csv\.gz")
_DIGEST = re.compile(r"[0-9a-f]{64}")
_DATA_FILE = re.compile(r"data/(?:SNAPSHOT\.json|README\.md|HAM10000_metadata\.csv\.gz"
                        r"|isic2018_task3_test/ISIC2018_Task3_Test_GroundTruth\.csv\.gz"
                        r"|images/[A-Za-z0-9_-]{1,64}\.(?:jpg|jpeg|png)|masks/[A-Za-z0-9_-]{1,64}_segmentation\.png)")



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
    _gunzip_capped(path / entry["split"], tmp / FILES.split, budget)
    atomic_write_json(tmp / BUNDLE_MARKER, {"bundle": meta["profile"], "packed_utc": meta.get("packed_utc"),
                                            "git_commit": meta.get("git_commit")})



def _open_bundled_run(run_path: Path, entry: dict[str, Any], bundle: Path) -> RunConfig:
    """The config of a bundled run, checked against the run's folder name (its identity) and data key."""

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
