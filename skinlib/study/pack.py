"""Results bundles, packing: what chapter 06 derives from trained weights before they are left behind (Grad-CAM,
ISIC 2018 predictions), and the bundle written from a profile's finished runs: their small files, the splits
once, the data summary, ``bundle.json`` with every checksum."""

from __future__ import annotations

import gzip
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from skinlib.data import load_ham10000, load_isic2018_test, montage_rows
from skinlib.data.index import find_isic2018_test_dir
from skinlib.data.snapshot import ATTRIBUTION, LICENCE, write_snapshot
from skinlib.explain import CAM_EXAMPLES_FILE, cam_mask_scores
from skinlib.inference import evaluate_external, held_out_index, record_onnx_parity
from skinlib.io import atomic_write_json, file_digest, replace_dir
from skinlib.models.weights import expected_weights_file
from skinlib.runs import FILES, MissingRunError, Run, RunConfig
from skinlib.runs.workspace import Workspace
from skinlib.study.bundle_format import (
    BINARY_FILES,
    BUNDLE_FILE,
    DATA_FOLDER,
    FORMAT,
    GZIP_FILES,
    MAX_BYTES,
    PLAIN_FILES,
    BundleError,
    bundle_dir,
    git_commit,
)
from skinlib.study.experiments import profile_config
from skinlib.study.inventory import no_training, profile_runs
from skinlib.study.plan import DERIVED, PLAN, Where, run_key
from skinlib.study.profiles import Profile, get_profile
from skinlib.study.tables import error_rows
from skinlib.train import fit

log = logging.getLogger(__name__)



# the Grad-CAM examples kept for chapter 06's grid (its `examples` parameter may ask for up to this many)
CAM_EXAMPLES = 6



def _gzip(src: Path, dst: Path) -> None:
    """Deterministic gzip (no name, no time stamp), so an unchanged file packs to the same bytes."""
    with open(src, "rb") as fin, open(dst, "wb") as raw, gzip.GzipFile(
            filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as fout:
        shutil.copyfileobj(fin, fout)



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

    try:
        path = expected_weights_file(config.model)
    except ValueError:
        return None
    return file_digest(path) if path.is_file() else None



def _source_image_size(index: Any) -> list[int]:
    """Width and height of the data's first image: the resolution the runs' images were resized from."""
    with Image.open(index["path"].iloc[0]) as im:
        return list(im.size)



def drawn_images(runs: Sequence[Run], index: Any, *, data_dir: str | os.PathLike | None = None
                 ) -> tuple[set[str], set[str]]:
    """The HAM10000 images the chapters draw (the data chapter's montage; the Grad-CAM examples and the error
    gallery of each run that kept Grad-CAM examples, i.e. the final model) and those drawn with their mask."""


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
    _gzip(run.file(FILES.split), split_tmp)
    split = Path("splits") / f"{file_digest(run.file(FILES.split))[:16]}.csv.gz"
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



OPTIONAL_PACKAGES: dict[str, str] = {
    "pytorch_grad_cam": "Grad-CAM scores and maps (chapter 06; pip install grad-cam)",
}
"""Packages a window can do without, each with what is left out of the bundle when it is missing."""



def missing_optional() -> dict[str, str]:
    """The :data:`OPTIONAL_PACKAGES` that cannot be imported here, with what the bundle will lack."""

    def absent(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is None
        except (ImportError, ValueError):  # blocked (a None entry in sys.modules, a finder that refuses it)
            return True

    return {name: what for name, what in OPTIONAL_PACKAGES.items() if absent(name)}



def derive(params: Profile, workspace: Workspace | None = None, *, device: str = "auto",
           not_derived: dict[str, str] | None = None) -> list[str]:
    """Compute, while the weights are at hand, what the plan derives from its studies' first-seed runs
    (:attr:`~skinlib.study.plan.Step.derived`): the finals' ISIC 2018 test predictions, ONNX parity and Grad-CAM
    examples, every derived run's Grad-CAM scores.

    Returns the run folders it touched; runs that are missing or bundled (no weights) are skipped, as is a
    dependent study whose runs are not known yet. What could not be derived is recorded, per run folder, in
    ``not_derived`` (with why), never raised.
    """

    workspace = workspace or Workspace.resolve()
    where = Where(profile_config(params), tuple(params.seeds), params.pretrained, workspace)
    wanted: dict[tuple[str, str, int], tuple[RunConfig, set[str]]] = {}
    done = []
    with no_training():
        for entry in PLAN.values():
            try:
                configs = entry.runs(where) if entry.derived else []
            except MissingRunError:  # what it needs has not finished: its runs are not known yet
                continue
            for c in configs:
                if c.seed == where.seeds[0]:
                    wanted.setdefault(run_key(c), (c, set()))[1].update(entry.derived)
        for c, derived in wanted.values():
            try:
                run = fit(c, data_dir=workspace.data, runs_dir=workspace.runs)
            except MissingRunError:
                continue
            if run.bundled:
                continue
            why = derive_run(run, derived=derived, data_dir=workspace.data, device=device)
            if why is None:
                done.append(run.path.name)
                if not_derived is not None:
                    not_derived.pop(run.path.name, None)
            elif not_derived is not None:
                not_derived[run.path.name] = why
    return done


def derive_run(run: Run, *, derived: Collection[str], data_dir: str | os.PathLike | None = None,
               device: str = "auto") -> str | None:
    """Derive ``derived`` (names of :data:`~skinlib.study.plan.DERIVED`) from one trained run. Returns ``None``
    when everything was derived, else what was left out and why: any failure (a missing optional package, missing
    masks, a damaged file, a CUDA error) is logged and returned, never raised, so the other runs are still
    packed."""

    unknown = sorted(set(derived) - set(DERIVED))
    if unknown:
        raise ValueError(f"unknown derivation(s) {unknown}; valid: {', '.join(DERIVED)}")
    lacking = []
    if "isic2018" in derived:
        try:
            find_isic2018_test_dir(data_dir)
        except FileNotFoundError:
            lacking.append("ISIC 2018 predictions: no ISIC 2018 test set where the window ran")
        else:
            lacking += _derive_step("ISIC 2018 predictions", run, evaluate_external, data_dir=data_dir,
                                    device=device)
    if "onnx" in derived:
        lacking += _derive_step("ONNX parity", run, record_onnx_parity, data_dir=data_dir)
    if {"gradcam", "gradcam_examples"} & set(derived):
        if "pytorch_grad_cam" in missing_optional():
            lacking.append("Grad-CAM: the package pytorch_grad_cam is not installed where the window ran")
        else:
            lacking += _derive_step("Grad-CAM", run, cam_mask_scores, data_dir=data_dir, device=device,
                                    examples=CAM_EXAMPLES if "gradcam_examples" in derived else 0)
    for why in lacking:
        log.warning("%s is packed without %s", run.path.name, why)
    return "; ".join(lacking) or None



def _derive_step(what: str, run: Run, step: Callable[..., Any], **kwargs: Any) -> list[str]:
    """Call ``step`` (Grad-CAM scores, the ISIC 2018 predictions, ONNX parity) on ``run``; the reason it failed,
    if it did."""
    try:
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

    params = get_profile(profile, **overrides)
    workspace = Workspace.resolve(data_dir=data_dir, runs_dir=runs_dir)
    derive(params, workspace, device=device)
    runs = profile_runs(params, workspace)
    missing = runs.missing_names()
    if missing and not allow_missing:
        raise BundleError(f"{len(missing)} runs of profile {profile} are not finished: {', '.join(missing)}; "
                          f"train them (skinlib book --profile {profile}, or benchmarks/gpu_window.py) or pass "
                          f"--allow-missing to pack the finished ones")
    return pack_runs(runs.finished, out or bundle_dir(profile), profile=profile, parameters=params.to_dict(),
                     missing=missing, data_dir=workspace.data)
