"""Results bundles are untrusted input: a crafted or damaged bundle is refused with one message and changes
nothing outside the run store (and nothing inside it, before the bundle has been checked in full)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from skinlib.cli import main
from skinlib.io import file_digest
from skinlib.runs import Run, RunConfig
from skinlib.study import bundles
from skinlib.study import unpack as unpack_module
from skinlib.train import fit

TINY = dict(name="tiny", image_size=32, epochs=1, batch_size=16, subset=0.03, device="cpu", progress=False,
            model_kwargs={"bn_momentum": 0.1})


@pytest.fixture(scope="module")
def good_bundle(tmp_path_factory, data_dir):
    """A genuine bundle of one tiny run, packed once for the module."""
    runs = tmp_path_factory.mktemp("runs")
    run = fit(RunConfig(**TINY), runs_dir=runs)
    return bundles.pack_runs([run], tmp_path_factory.mktemp("packed") / "smoke", profile="smoke").path


def tree_state(root: Path) -> dict[str, str]:
    """Every path under ``root`` with its content hash (files), link target (links) or mode (folders)."""
    state = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            state[rel] = "link:" + os.readlink(p)
        elif p.is_file():
            state[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            state[rel] = f"dir:{stat.S_IMODE(p.stat().st_mode):o}"
    return state


@pytest.fixture
def world(tmp_path, good_bundle):
    """A temporary machine: the bundle to forge, an empty run store, and folders an attacker would aim at."""
    bundle = tmp_path / "bundle"
    shutil.copytree(good_bundle, bundle)
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "precious.txt").write_text("do not touch")
    (tmp_path / "secret.txt").write_text("a file of this machine")
    store = tmp_path / "store"
    store.mkdir()
    return tmp_path, bundle, store


def rehash(bundle: Path) -> None:
    """Recompute every listed checksum, as an attacker who controls the whole bundle would."""
    meta = json.loads((bundle / "bundle.json").read_text())
    meta["files"] = {name: file_digest(bundle / name) if (bundle / name).is_file() else "0" * 64
                     for name in meta["files"]}
    (bundle / "bundle.json").write_text(json.dumps(meta))


def edit_meta(bundle: Path, change) -> None:
    meta = json.loads((bundle / "bundle.json").read_text())
    change(meta)
    (bundle / "bundle.json").write_text(json.dumps(meta))


def rename_run(meta: dict, new: str) -> None:
    """Point the one run at folder ``new`` and relist its files under that name."""
    old = meta["runs"][0]["folder"]
    meta["runs"][0]["folder"] = new
    meta["files"] = {name.replace(f"runs/{old}/", f"runs/{new}/"): d for name, d in meta["files"].items()}


def refused(world, data_dir, match: str) -> None:
    """Unpacking fails with ``match``; nothing outside the store changes and the store stays as it was."""
    root, bundle, store = world
    before = {k: v for k, v in tree_state(root).items() if not k.startswith("bundle/")}
    with pytest.raises(bundles.BundleError, match=match):
        bundles.unpack(bundle, data_dir=data_dir, runs_dir=store)
    after = {k: v for k, v in tree_state(root).items() if not k.startswith("bundle/")}
    assert after == before


def only_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_the_genuine_bundle_unpacks_with_shareable_folders(world, data_dir):
    root, bundle, store = world
    before = {k: v for k, v in tree_state(root).items() if not k.startswith(("bundle/", "store/"))}
    restored = bundles.unpack(bundle, data_dir=data_dir, runs_dir=store).restored
    assert len(restored) == 1
    assert {k: v for k, v in tree_state(root).items() if not k.startswith(("bundle/", "store/"))} == before
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((store / restored[0]).stat().st_mode) == 0o777 & ~umask  # not mkdtemp's 0700


@pytest.mark.parametrize("folder", ["./../victim", "../victim", "..", ".", "a/b", "", ".hidden", "x" * 300,
                                    "ABSOLUTE"])
def test_run_folder_traversal_is_refused(world, data_dir, folder):
    root, bundle, _ = world
    folder = str(root / "victim") if folder == "ABSOLUTE" else folder
    edit_meta(bundle, lambda m: rename_run(m, folder))
    refused(world, data_dir, "not a valid results bundle")


def test_a_plain_folder_name_that_is_not_the_runs_identity_is_refused(world, data_dir):
    _, bundle, _ = world
    meta = json.loads((bundle / "bundle.json").read_text())
    old = meta["runs"][0]["folder"]
    (bundle / "runs" / old).rename(bundle / "runs" / "notebooks")
    edit_meta(bundle, lambda m: rename_run(m, "notebooks"))
    refused(world, data_dir, "is not the run its config.yaml and data key describe")


@pytest.mark.parametrize("split", ["../../secret.txt", "splits/../../secret.txt", "/etc/passwd",
                                   "splits/0123456789abcdef.csv.gz"])
def test_split_outside_the_listing_is_refused(world, data_dir, split):
    _, bundle, _ = world
    edit_meta(bundle, lambda m: m["runs"][0].update(split=split))
    refused(world, data_dir, "names the split")


@pytest.mark.parametrize("name", ["../secret.txt", "runs/{f}/../../../secret.txt", "/etc/passwd",
                                  "runs/{f}/best.pt", "runs/{f}/sub/config.yaml", "notes.txt",
                                  "data/images/../../secret.jpg", "data/../secret.txt", "data/images/x.exe",
                                  "data/masks/x.png", "data/images/sub/x.jpg", "data/notes.txt"])
def test_listed_files_outside_the_allowed_names_are_refused(world, data_dir, name):
    _, bundle, _ = world
    edit_meta(bundle, lambda m: m["files"].update({name.format(f=m["runs"][0]["folder"]): "0" * 64}))
    refused(world, data_dir, "it lists the file")


def test_a_symlinked_member_is_refused(world, data_dir):
    root, bundle, _ = world
    run = next((bundle / "runs").iterdir())
    (run / "history.csv").unlink()
    (run / "history.csv").symlink_to(root / "secret.txt")
    rehash(bundle)  # the checksum of the link's target: the check must not follow the link
    refused(world, data_dir, "symbolic link")


def test_a_symlinked_runs_folder_is_refused(world, data_dir):
    root, bundle, _ = world
    shutil.move(bundle / "runs", root / "elsewhere")
    (bundle / "runs").symlink_to(root / "elsewhere")
    refused(world, data_dir, "symbolic link")


def test_unlisted_files_are_neither_read_nor_copied(world, data_dir):
    _, bundle, store = world
    run = next((bundle / "runs").iterdir())
    (run / "best.pt").write_bytes(b"not weights")
    (run / "evil.txt").write_text("unlisted")
    restored = bundles.unpack(bundle, data_dir=data_dir, runs_dir=store).restored
    assert not (store / restored[0] / "best.pt").exists() and not (store / restored[0] / "evil.txt").exists()


def test_a_compression_bomb_is_refused_and_leaves_no_trace(world, data_dir, monkeypatch):
    _, bundle, store = world
    monkeypatch.setattr(unpack_module, "MAX_EXPANDED_FILE", 2 * 2**20)
    run = next((bundle / "runs").iterdir())
    with gzip.open(run / "predictions.csv.gz", "wb") as fh:
        fh.write(b"0" * (8 * 2**20))  # 8 MB from a few KB
    assert (run / "predictions.csv.gz").stat().st_size < 100_000
    rehash(bundle)
    refused(world, data_dir, "expands to more than 2 MB")
    assert list(store.iterdir()) == []  # no temporary folder left either


def test_a_bundle_over_the_size_limit_is_refused_before_hashing(world, data_dir, monkeypatch):
    monkeypatch.setattr(unpack_module, "MAX_BYTES", 1000)
    refused(world, data_dir, "over the 0 MB a results bundle may hold")


@pytest.mark.parametrize("text, match", [
    ("{", "is damaged"),
    ("[]", "not a mapping"),
    ('{"format": 1, "profile": "smoke", "runs": []}', "no 'files' listing"),
    ("DROP_FILES", "no 'files' listing"),
    ("DROP_DATA_KEY", "has no 'data_key'"),
    ("BAD_DIGEST", "not a SHA-256"),
    ('{"format": 99}', "has format 99"),
])
def test_malformed_listings_are_named(world, data_dir, text, match):
    _, bundle, _ = world
    if text == "DROP_FILES":
        edit_meta(bundle, lambda m: m.pop("files"))
    elif text == "DROP_DATA_KEY":
        edit_meta(bundle, lambda m: m["runs"][0].pop("data_key"))
    elif text == "BAD_DIGEST":
        edit_meta(bundle, lambda m: m["files"].update({k: "x" for k in m["files"]}))
    else:
        (bundle / "bundle.json").write_text(text)
    refused(world, data_dir, match)


def test_the_cli_answers_a_hostile_bundle_in_one_line(world, data_dir, capsys):
    root, bundle, store = world
    edit_meta(bundle, lambda m: rename_run(m, "../victim"))
    code = main(["results", "unpack", str(bundle), "--data-dir", str(data_dir), "--runs-dir", str(store)])
    assert code == 2 and "single plain name" in only_line(capsys)
    assert (root / "victim" / "precious.txt").read_text() == "do not touch"


def test_a_failed_restore_keeps_the_unfinished_local_run(world, data_dir):
    _, bundle, store = world
    folder = next((bundle / "runs").iterdir()).name
    (store / folder).mkdir()
    (store / folder / "last.pt").write_bytes(b"an epoch of local training")
    (bundle / "runs" / folder / "history.csv.gz").write_bytes(b"")  # not listed; harmless
    (bundle / "runs" / folder / "predictions.csv.gz").write_bytes(b"not gzip at all")
    rehash(bundle)
    refused(world, data_dir, "not a valid gzip file")
    assert (store / folder / "last.pt").read_bytes() == b"an epoch of local training"
    assert [p.name for p in store.iterdir()] == [folder]


def test_pack_refuses_to_empty_a_folder_that_is_not_its_bundle(good_bundle, tmp_path, capsys):
    meta = bundles.read_bundle(good_bundle)
    runs_dir = tmp_path / "store"
    bundles.unpack(good_bundle, runs_dir=runs_dir)
    restored = [Run.open(runs_dir / e["folder"]) for e in meta["runs"]]
    others = tmp_path / "results"
    (others / "gpu").mkdir(parents=True)
    (others / "gpu" / "bundle.json").write_text("{}")
    with pytest.raises(bundles.BundleError, match=r"refusing to pack profile smoke into .*files that are not"):
        bundles.pack_runs(restored, others, profile="smoke")
    assert (others / "gpu" / "bundle.json").read_text() == "{}"
    gpu = tmp_path / "gpu-bundle"
    bundles.pack_runs(restored, gpu, profile="gpu")
    with pytest.raises(bundles.BundleError, match="the bundle of profile 'gpu'"):
        bundles.pack_runs(restored, gpu, profile="smoke")
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(bundles.BundleError, match="is a file or a link"):
        bundles.pack_runs(restored, tmp_path / "a-file", profile="smoke")
    again = bundles.pack_runs(restored, gpu, profile="gpu")  # the same profile's bundle is replaced
    assert again.runs == [e["folder"] for e in meta["runs"]]


@pytest.mark.parametrize("kind", ["garbage", "bomb"])
def test_a_summary_image_that_does_not_decode_or_is_huge_is_refused(world, data_dir, kind, tmp_path_factory):
    from PIL import Image

    _, bundle, _ = world
    images = sorted((bundle / "data").rglob("*.jpg"))
    assert images, "the bundle's data summary carries the images its chapters draw"
    if kind == "garbage":
        images[0].write_bytes(b"\xff\xd8 not a jpeg at all")
    else:
        Image.new("L", (2500, 2000)).save(images[0], format="JPEG")
    rehash(bundle)
    cache = tmp_path_factory.mktemp("cache")
    with pytest.raises(bundles.BundleError, match=images[0].name):
        bundles.data_snapshot(bundle, cache_dir=cache)
    assert not any((cache / "snapshots").glob("*/SNAPSHOT.json"))  # nothing half-made is left to be reused
