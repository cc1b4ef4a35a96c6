#!/usr/bin/env python3
"""One GPU window on a lent machine with no package registry: stage here, run there, bring back five files.

    python3 benchmarks/gpu_window.py stage                 # here: .device/ (data archive, wheels, commit)
    # on the GPU machine, from a copy of the repository with .device/ beside it, inside a 600 s command:
    python3 benchmarks/gpu_window.py run "$OUT" --seconds 560
    python3 benchmarks/gpu_window.py dry-run /tmp/out      # here, on the CPU: the same steps at tiny settings

``stage`` writes ``.device/`` (ignored by git): the HAM10000 images, masks and metadata and the ISIC 2018 test
set as one gzipped tar (about 56 MB), the pure-Python wheels the GPU image lacks (grad-cam, ttach) and the
commit the copy is from, and checks that the working tree plus ``.device/`` stays under the 64 MiB a call may
carry. ``run`` unpacks them outside the repository, samples ``nvidia-smi`` in the background, runs
``skinlib results window`` for the ``gpu`` profile and then, with the time left, for the further seeds of the
``cpu`` profile (``--then``), each with a hard stop before ``--seconds``, and writes at most five files into OUT:

    results-<profile>.tar.gz   one per profile that finished a run (unpack into results/)
    window-<UTC stamp>.log     everything the windows printed
    summary.csv                one row per run: profile, run, seed, epochs, best epoch, test accuracy and
                               bacc, training images/s, device, and a flag for a one-class collapse
    diagnostics.tar.gz         nvidia-smi samples, the windows' reports (per run: estimate, start, end,
                               outcome; the fitted sharing and solo speeds), the environment

It never resets or reconfigures the GPU. ``dry-run`` stages into a temporary folder, hides the packages the
GPU image lacks (papermill, Jupyter Book, myst-nb, grad-cam) from the window's processes, and runs the same
steps on the CPU with the smoke profile at a 3 % subset and one epoch.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGE = ROOT / ".device"
CARRY_LIMIT = 64 * 2**20  # what one call of the device tool carries: the working tree and the carried paths
WHEELS = ("grad-cam", "ttach")  # pure Python; everything else skinlib needs is in the GPU image
ABSENT_THERE = ("papermill", "myst_nb", "jupyter_book", "nbconvert", "nbclient", "pytorch_grad_cam", "ttach")
COLLAPSE_SHARE = 0.95  # a model that predicts one class for this share of the test images has collapsed


# --- stage (here) ---------------------------------------------------------------------------------------------

def _data_folders(data_dir: Path | None) -> tuple[Path, Path]:
    sys.path.insert(0, str(ROOT))
    from skinlib.data.index import find_ham10000_metadata, find_isic2018_test_dir
    from skinlib.data.paths import resolve_data_dir

    ham = find_ham10000_metadata(resolve_data_dir(data_dir)).parent
    return ham, find_isic2018_test_dir(ham)


def _tree_bytes() -> int:
    """Bytes of what a device call sends: tracked files and untracked files git does not ignore."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, check=True).stdout
    return sum((ROOT / f).stat().st_size for f in out.decode().split("\0") if f and (ROOT / f).is_file())


def stage(dest: Path, data_dir: Path | None, *, wheels: bool = True) -> None:
    """Write the data archive, the wheels and the commit into ``dest``; refuse what would not travel."""
    ham, isic = _data_folders(data_dir)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    with tarfile.open(dest / "data.tar.gz", "w:gz", compresslevel=1) as tar:
        tar.add(ham, arcname="ham10000")  # metadata, images and masks, in whatever layout they have
        tar.add(isic, arcname="isic2018_task3_test")
    if wheels:
        versions = [f"{w}=={metadata.version(w)}" for w in WHEELS]
        built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dest / "wheels"),
                                *versions], capture_output=True, text=True)
        if built.returncode:
            print(f"stage: no wheels for {', '.join(versions)} (the window packs without Grad-CAM): "
                  f"{built.stderr.strip().splitlines()[-1] if built.stderr.strip() else built.returncode}")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()
    (dest / "COMMIT").write_text(commit.stdout.strip() + ("-dirty" if dirty else "") + "\n")
    staged = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    total = staged + (_tree_bytes() if dest.is_relative_to(ROOT) else 0)
    print(f"stage: {dest.name}/ holds {staged / 2**20:.1f} MiB; with the working tree {total / 2**20:.1f} MiB "
          f"of the {CARRY_LIMIT / 2**20:.0f} MiB a call carries")
    if total > CARRY_LIMIT:
        raise SystemExit(f"stage: {total / 2**20:.1f} MiB would not travel (limit {CARRY_LIMIT / 2**20:.0f} MiB); "
                         f"remove untracked files from the working tree")


# --- run (there) ----------------------------------------------------------------------------------------------

class Log:
    """Everything printed, to the terminal and to the log file that comes back."""

    def __init__(self, path: Path) -> None:
        self.file = path.open("a", buffering=1)

    def __call__(self, text: str) -> None:
        line = f"[{datetime.now(timezone.utc).strftime('%H:%M:%S')}] {text}"
        print(line, flush=True)
        self.file.write(line + "\n")


def _unpack(stage_dir: Path, work: Path, log: Log, *, hide: bool) -> dict[str, str]:
    """Unpack the data and install the wheels under ``work``; the environment the windows run with."""
    data = work / "data"
    with tarfile.open(stage_dir / "data.tar.gz") as tar:
        tar.extractall(data, filter="data")
    env = {"SKINLIB_DATA_DIR": str(data / "ham10000"),
           "SKINLIB_ISIC2018_TEST_DIR": str(data / "isic2018_task3_test"),
           "SKINLIB_CACHE_DIR": str(work / "cache"), "PYTHONUNBUFFERED": "1",
           "SKINLIB_GIT_COMMIT": (stage_dir / "COMMIT").read_text().strip() if (stage_dir / "COMMIT").is_file()
           else "unknown"}
    paths = [str(ROOT)]
    wheels = sorted((stage_dir / "wheels").glob("*.whl")) if (stage_dir / "wheels").is_dir() else []
    if wheels and not hide:
        site = work / "site"
        done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                               "--no-compile", "--target", str(site), *map(str, wheels)],
                              capture_output=True, text=True)
        log(f"wheels: {', '.join(w.name for w in wheels)} " + ("installed" if not done.returncode else
                                                                f"not installed: {done.stderr.strip()[-300:]}"))
        paths.append(str(site))
    if hide:  # what the GPU image lacks, hidden from the windows' processes (the dry run)
        blocker = work / "blocker"
        blocker.mkdir(exist_ok=True)
        (blocker / "sitecustomize.py").write_text(
            "import sys\n"
            f"ABSENT = {ABSENT_THERE!r}\n"
            "class _Absent:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ABSENT:\n"
            "            raise ModuleNotFoundError(f'No module named {name!r} (absent on the GPU image)', name=name)\n"
            "        return None\n"
            "sys.meta_path.insert(0, _Absent())\n")
        paths.insert(0, str(blocker))
    env["PYTHONPATH"] = os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _sample_gpu(diag: Path) -> subprocess.Popen | None:
    """``nvidia-smi`` every two seconds into ``diag/nvidia-smi.csv`` (reads only; never changes a setting)."""
    if shutil.which("nvidia-smi") is None:
        return None
    out = (diag / "nvidia-smi.csv").open("w")
    return subprocess.Popen(["nvidia-smi", "--query-gpu=timestamp,utilization.gpu,utilization.memory,memory.used,"
                             "memory.total,power.draw,temperature.gpu,clocks.sm", "--format=csv", "-l", "2"],
                            stdout=out, stderr=subprocess.STDOUT)


def _window(profile: str, budget: float, started: float, hard_stop: float, out: Path, diag: Path, env: dict,
            log: Log, extra: list[str], runs: Path) -> int:
    """One ``skinlib results window`` in its own process group, killed at ``hard_stop`` if still running."""
    cmd = [sys.executable, "-m", "skinlib", "results", "window", "--profile", profile, "--budget", f"{budget:.0f}",
           "--started-at", f"{started:.3f}", "--out", str(out), "--runs-dir", str(runs), "--jobs",
           env.get("SKINLIB_JOBS", "auto"), "--report", str(diag / f"report-{profile}.json"), *extra]
    log(f"window {profile}: budget {budget:.0f} s from the command's start, hard stop in "
        f"{hard_stop - time.time():.0f} s: {' '.join(cmd[1:])}")
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace", start_new_session=True)

    def relay() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            log(f"  {profile}| {line.rstrip()}")

    reader = threading.Thread(target=relay, daemon=True)
    reader.start()
    try:
        proc.wait(timeout=max(1.0, hard_stop - time.time()))
    except subprocess.TimeoutExpired:
        log(f"window {profile}: hard stop reached, stopping its processes")
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    reader.join(timeout=5)
    log(f"window {profile}: exit code {proc.returncode}")
    return proc.returncode if proc.returncode is not None else -9


def _summary(out: Path, work: Path) -> list[dict]:
    """One row per run of every archive in ``out``, read from the bundles themselves."""
    rows = []
    for archive in sorted(out.glob("results-*.tar.gz")):
        target = work / "summary" / archive.name
        with tarfile.open(archive) as tar:
            tar.extractall(target, filter="data")
        for meta_file in target.glob("*/bundle.json"):
            bundle = json.loads(meta_file.read_text())
            for entry in bundle["runs"]:
                rows.append(_summary_row(meta_file.parent / "runs" / entry["folder"], bundle["profile"], entry))
    return rows


def _summary_row(folder: Path, profile: str, entry: dict) -> dict:
    import gzip

    import yaml

    metrics = json.loads((folder / "metrics.json").read_text())
    config = yaml.safe_load((folder / "config.yaml").read_text())
    with gzip.open(folder / "predictions.csv.gz", "rt") as f:
        preds = [r["pred"] for r in csv.DictReader(f)]
    top = max(preds.count(p) for p in set(preds)) / len(preds) if preds else 0.0
    with (folder / "history.csv").open() as f:
        history = list(csv.DictReader(f))
    speeds = [float(h["images_per_s"]) for h in history[1:] or history if h.get("images_per_s")]
    return {"profile": profile, "run": entry["folder"], "seed": config.get("seed", ""),
            "epochs_run": metrics.get("epochs_run"), "best_epoch": metrics.get("best_epoch"),
            "test_accuracy": round(metrics["test"]["accuracy"], 4), "test_bacc": round(metrics["test"]["bacc"], 4),
            "train_images_per_s": round(sum(speeds) / len(speeds), 1) if speeds else "",
            "device": entry.get("device", ""), "one_class_collapse": top >= COLLAPSE_SHARE}


def run(out: Path, *, seconds: float, stage_dir: Path, profiles: list[tuple[str, list[str]]], hide: bool,
        reserve: float, started: float | None = None) -> int:
    started = time.time() if started is None else started
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    log = Log(out / f"window-{stamp}.log")
    work = Path(tempfile.mkdtemp(prefix="skinlib-window."))
    diag = work / "diagnostics"
    diag.mkdir()
    sampler = None
    try:
        env = _unpack(stage_dir, work, log, hide=hide)
        log(f"staged in {time.time() - started:.1f} s; commit {env['SKINLIB_GIT_COMMIT']}")
        sampler = _sample_gpu(diag)
        hard_stop = started + seconds
        for i, (profile, extra) in enumerate(profiles):
            left = hard_stop - time.time()
            if left < reserve + 60:
                log(f"window {profile}: {left:.0f} s left, not enough for a run and its pack; skipped")
                continue
            # the first profile gets the time the later ones do not need; each ends (with its pack) before the stop
            share = left if i == len(profiles) - 1 else max(reserve + 60, left * 0.6)
            budget = (time.time() + share - 10) - started
            _window(profile, budget, started, started + budget + 15, out, diag, env, log,
                    ["--reserve", f"{reserve:.0f}", *extra], work / f"runs-{profile}")
    except Exception as exc:  # the files that came so far still come back
        log(f"run: {type(exc).__name__}: {exc}")
    finally:
        if sampler is not None:
            sampler.terminate()
        rows = []
        try:
            rows = _summary(out, work)
        except Exception as exc:
            log(f"summary: {type(exc).__name__}: {exc}")
        with (out / "summary.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["profile", "run", "seed", "epochs_run", "best_epoch",
                                                   "test_accuracy", "test_bacc", "train_images_per_s", "device",
                                                   "one_class_collapse"])
            writer.writeheader()
            writer.writerows(rows)
        collapsed = [r["run"] for r in rows if r["one_class_collapse"]]
        log(f"summary: {len(rows)} runs" + (f"; one-class collapse: {', '.join(collapsed)}" if collapsed else ""))
        _diagnostics(diag, out, log)
        log(f"done in {time.time() - started:.0f} s of {seconds:.0f}")
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _diagnostics(diag: Path, out: Path, log: Log) -> None:
    import platform

    env = {"python": platform.python_version(), "platform": platform.platform()}
    for name in ("torch", "torchvision", "timm", "numpy", "pandas", "grad-cam"):
        try:
            env[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            env[name] = None
    (diag / "environment.json").write_text(json.dumps(env, indent=1))
    with tarfile.open(out / "diagnostics.tar.gz", "w:gz") as tar:
        for path in sorted(diag.iterdir()):
            tar.add(path, arcname=f"diagnostics/{path.name}")
    log(f"diagnostics: {', '.join(sorted(p.name for p in diag.iterdir()))}")


def _profiles(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    """The windows to run: ``--profile`` with its ``-p`` options, then each ``--then PROFILE[:NAME=VALUE,...]``."""
    out = [(args.profile, [x for name, value in args.p for x in ("-p", name, value)])]
    for spec in args.then:
        profile, _, rest = spec.partition(":")
        extra = []
        for item in filter(None, rest.split(";")):
            name, _, value = item.partition("=")
            extra += ["-p", name, value]
        out.append((profile, extra))
    return out


def main(argv: list[str] | None = None) -> int:
    started = time.time()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("stage", help="write .device/: the data archive, the wheels, the commit")
    p.add_argument("--data-dir", type=Path, help="the HAM10000 folder (default: as skinlib finds it)")
    p.add_argument("--dest", type=Path, default=STAGE)
    for name in ("run", "dry-run"):
        p = sub.add_parser(name, help="the window on the GPU machine" if name == "run" else
                           "the same steps on this CPU at tiny settings")
        p.add_argument("out", type=Path, help="the folder whose files come back ($OUT)")
        p.add_argument("--seconds", type=float, default=560 if name == "run" else 240,
                       help="the whole command's budget, prelude and packing included")
        p.add_argument("--stage-dir", type=Path, default=STAGE if name == "run" else None)
        p.add_argument("--profile", default="gpu" if name == "run" else "smoke")
        p.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
        p.add_argument("--then", action="append", default=[], metavar="PROFILE[:NAME=VALUE;...]",
                       help="a further window with the time left, e.g. 'cpu:seeds=[0, 1, 2]'")
        p.add_argument("--reserve", type=float, default=60 if name == "run" else 30,
                       help="seconds each window keeps for Grad-CAM, ISIC 2018 predictions and packing")
    args = parser.parse_args(argv)
    if args.command == "stage":
        stage(args.dest, args.data_dir)
        return 0
    if args.command == "dry-run":
        stage_dir = args.stage_dir or Path(tempfile.mkdtemp(prefix="skinlib-stage."))
        if not (stage_dir / "data.tar.gz").is_file():
            stage(stage_dir, None, wheels=False)
        if not args.p:
            args.p = [["subset", "0.03"], ["epochs", "1"], ["image_size", "64"], ["n_boot", "10"]]
        os.environ.setdefault("SKINLIB_JOBS", "2")
        return run(args.out, seconds=args.seconds, stage_dir=stage_dir, profiles=_profiles(args), hide=True,
                   reserve=args.reserve, started=started)
    if not (args.stage_dir / "data.tar.gz").is_file():
        raise SystemExit(f"no staged data in {args.stage_dir}: run `python3 benchmarks/gpu_window.py stage` first")
    return run(args.out, seconds=args.seconds, stage_dir=args.stage_dir, profiles=_profiles(args), hide=False,
               reserve=args.reserve, started=started)


if __name__ == "__main__":
    sys.exit(main())
