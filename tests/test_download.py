"""`skinlib data download` against a local HTTP server serving fixture archives built here."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from skinlib.cli import main
from skinlib.data import download as dl
from skinlib.data.index import load_ham10000, load_isic2018_test
from skinlib.data.masks import find_masks
from skinlib.fetch import Checksum, ChecksumError, DownloadError, download, mirrored
from tests.fileserver import FileServer
from tests.published import HAM, ISIC, fixture_files, serve


@pytest.fixture()
def server():
    srv = serve(fixture_files())
    srv.url = srv.start()
    yield srv
    srv.stop()


def test_complete_download_lays_out_what_the_loader_reads(server, tmp_path, capsys):
    dest = tmp_path / "data"
    assert main(["data", "download", "--dest", str(dest), "--mirror", server.url]) == 0
    out = capsys.readouterr().out
    assert f"SKINLIB_DATA_DIR={dest}" in out and "OK: no problems found" in out
    index = load_ham10000(dest)
    assert sorted(index["image_id"]) == sorted(i for i, _, _ in HAM)
    assert dict(index["dx"].value_counts()) == {"nv": 2, "mel": 1, "bkl": 1, "bcc": 1, "df": 1, "vasc": 1}
    assert len(find_masks(index, dest)) == len(HAM)
    test = load_isic2018_test(dest)
    assert list(test["dx"]) == ["nv", "mel", "akiec"]
    assert (dest / "ham10000" / "HAM10000_metadata.csv").is_file()
    assert not list((dest / ".downloads").glob("*.zip")), "archives are removed after extraction by default"
    # a second run fetches nothing
    before = len(server.log)
    assert main(["data", "download", "--dest", str(dest), "--mirror", server.url]) == 0
    assert "already downloaded" in capsys.readouterr().out
    assert len(server.log) == before


def test_only_the_parts_asked_for(server, tmp_path):
    report = dl.download_data(tmp_path, what="isic2018_test", mirror=server.url, progress=False)
    assert set(report.fetched) == {"ISIC2018_Task3_Test_Input.zip", "ISIC2018_Task3_Test_GroundTruth.zip"}
    assert not (tmp_path / "ham10000").exists()
    assert len(list((tmp_path / "isic2018_task3_test" / "images").iterdir())) == len(ISIC)
    with pytest.raises(ValueError, match="valid: ham10000, masks, isic2018_test"):
        dl.parse_parts("ham10000,lesions")


def test_interrupted_download_resumes_where_it_stopped(server, tmp_path):
    name = "HAM10000_images_part_1.zip"
    path, data = "/api/access/datafile/1000", server.files["/api/access/datafile/1000"]
    half = len(data) // 2
    server.drops[path] = [half]
    with pytest.raises(DownloadError, match=r"partial file .*part_1\.zip\.part is kept.*run the same command again"):
        dl.download_data(tmp_path, what="ham10000", mirror=server.url, retries=0, progress=False)
    part = tmp_path / ".downloads" / f"{name}.part"
    assert part.stat().st_size == half
    assert not (tmp_path / "ham10000").exists(), "nothing is extracted from an incomplete download"
    report = dl.download_data(tmp_path, what="ham10000", mirror=server.url, retries=0, progress=False)
    assert server.gets(path) == [None, f"bytes={half}-"]
    assert report.fetched[name].resumed_from == half
    assert report.fetched[name].downloaded == len(data) - half
    assert len(load_ham10000(tmp_path)) == len(HAM)


def test_a_connection_closed_mid_file_is_retried_from_its_last_byte(server, tmp_path):
    path = "/2018/ISIC2018_Task3_Test_Input.zip"
    size = len(server.files[path])
    server.drops[path] = [100, 250]
    dl.download_data(tmp_path, what="isic2018_test", mirror=server.url, retries=3, progress=False)
    assert server.gets(path) == [None, "bytes=100-", "bytes=350-"]
    assert (tmp_path / "isic2018_task3_test" / "images").is_dir()
    assert server.sent >= size


def test_a_server_ignoring_ranges_restarts_the_file(tmp_path):
    data = bytes(range(256)) * 400
    srv = FileServer()
    srv.add("/f.bin", data)
    srv.drops["/f.bin"] = [5000]
    srv.honour_range = False
    url = srv.start()
    try:
        result = download(f"{url}/f.bin", tmp_path / "f.bin", progress=False, backoff=0,
                          checksum=Checksum("sha256", hashlib.sha256(data).hexdigest(), "test"))
    finally:
        srv.stop()
    assert (tmp_path / "f.bin").read_bytes() == data and result.downloaded == 5000 + len(data)


def test_checksum_mismatch_is_refused_and_nothing_extracted(tmp_path):
    files = fixture_files()
    srv = serve(files, md5={"HAM10000_images_part_2.zip": "0" * 32})
    url = srv.start()
    try:
        with pytest.raises(ChecksumError, match=r"checksum mismatch for HAM10000_images_part_2\.zip: expected md5 0+ "
                                                r"\(Harvard Dataverse metadata"):
            dl.download_data(tmp_path, what="ham10000", mirror=url, progress=False)
    finally:
        srv.stop()
    assert not (tmp_path / "ham10000").exists()
    assert (tmp_path / ".downloads" / "HAM10000_images_part_2.zip.rejected").is_file()
    assert not (tmp_path / ".downloads" / "HAM10000_images_part_2.zip").exists()


def test_missing_file_is_a_404_naming_the_url(tmp_path, capsys):
    files = fixture_files()
    srv = serve(files)
    del srv.files["/2018/ISIC2018_Task3_Test_GroundTruth.zip"]
    url = srv.start()
    try:
        code = main(["data", "download", "--dest", str(tmp_path), "--what", "isic2018_test", "--mirror", url])
    finally:
        srv.stop()
    err = capsys.readouterr().err
    assert code != 0 and "ISIC2018_Task3_Test_GroundTruth.zip does not exist (HTTP 404)" in err
    assert "Traceback" not in err
    assert not (tmp_path / "isic2018_task3_test").exists()


def test_offline_is_one_line_saying_how_to_copy_the_data(tmp_path, capsys):
    code = main(["data", "download", "--dest", str(tmp_path), "--mirror", "http://127.0.0.1:9"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0 and len(lines) == 1, err
    assert lines[0].startswith("error: cannot reach 127.0.0.1:9") and "copy DIR here" in lines[0]


def test_finished_files_are_not_downloaded_again(tmp_path):
    data = b"x" * 3000
    srv = FileServer()
    srv.add("/f.bin", data)
    url = srv.start()
    try:
        check = Checksum("md5", hashlib.md5(data).hexdigest(), "test")
        first = download(f"{url}/f.bin", tmp_path / "f.bin", checksum=check, progress=False)
        second = download(f"{url}/f.bin", tmp_path / "f.bin", checksum=check, progress=False)
    finally:
        srv.stop()
    assert first.downloaded == 3000 and second.skipped and second.downloaded == 0
    assert len(srv.gets("/f.bin")) == 1


def test_s3_multipart_etag_and_mirror_urls(tmp_path):
    path = tmp_path / "big.bin"
    data = np.random.default_rng(0).integers(0, 255, (17 << 20,), dtype=np.uint8).tobytes()
    path.write_bytes(data)
    parts = [hashlib.md5(data[i:i + (8 << 20)]).digest() for i in range(0, len(data), 8 << 20)]
    etag = hashlib.md5(b"".join(parts)).hexdigest() + "-3"
    assert Checksum("s3-etag", etag, "test").check(path)[0]
    assert not Checksum("s3-etag", "0" * 32 + "-3", "test").check(path)[0]
    assert Checksum("s3-etag", hashlib.md5(data).hexdigest(), "test").check(path)[0]
    with pytest.raises(ValueError, match="not a s3-etag digest"):
        Checksum("s3-etag", "abc", "test")
    assert mirrored("https://a.org/x/y.zip?q=1", "http://127.0.0.1:8/base/") == "http://127.0.0.1:8/base/x/y.zip?q=1"
    with pytest.raises(ValueError, match="not an http"):
        dl.download_data(tmp_path, mirror="ftp://host")


def test_download_throughput_is_reported(server, tmp_path):
    report = dl.download_data(tmp_path, mirror=server.url, progress=False, keep_archives=True)
    assert report.downloaded_bytes == sum(len(v) for v in fixture_files().values())
    assert all((tmp_path / ".downloads" / name).is_file() for name in fixture_files())
    again = dl.download_data(tmp_path, mirror=server.url, progress=False, force=True)
    assert again.downloaded_bytes == 0 and all(r.skipped for r in again.fetched.values())
    assert Path(again.dest) == tmp_path.resolve()


# --- `skinlib weights fetch`: the same downloader, into the caches pretrained=True reads --------------------

def _state_bytes(name: str) -> tuple[dict, bytes]:
    import torch

    from skinlib.models import create_model

    state = create_model(name, num_classes=1000).state_dict()
    buf = io.BytesIO()
    torch.save(state, buf)
    return state, buf.getvalue()


def test_weights_fetch_torchvision_checks_the_hash_prefix_and_resumes(tmp_path, monkeypatch):
    import torch

    from skinlib.models import create_model
    from skinlib.models import weights as w

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    state, data = _state_bytes("mobilenet_v3_small")
    name = f"mobilenet_v3_small-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    monkeypatch.setattr(w, "weights_url", lambda base: f"https://download.pytorch.org/models/{name}")
    srv = FileServer()
    srv.add(f"/models/{name}", data)
    srv.drops[f"/models/{name}"] = [len(data) // 3]
    url = srv.start()
    try:
        result = w.fetch_weights("mobilenet_v3_small_caco", mirror=url, progress=False)
    finally:
        srv.stop()
    assert result.path == tmp_path / "torch" / "hub" / "checkpoints" / name
    assert srv.gets(name) == [None, f"bytes={len(data) // 3}-"]
    model = create_model("mobilenet_v3_small", pretrained=True)
    assert torch.equal(model.state_dict()["features.0.0.weight"], state["features.0.0.weight"])


def test_weights_fetch_refuses_a_file_whose_hash_prefix_differs(tmp_path, monkeypatch, capsys):
    from skinlib.models import weights as w

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    expected = w.expected_weights_file("resnet18")
    srv = FileServer()
    srv.add(f"/models/{expected.name}", b"not the published checkpoint")
    url = srv.start()
    try:
        code = main(["weights", "fetch", "resnet18", "--mirror", url])
    finally:
        srv.stop()
    err = capsys.readouterr().err
    assert code != 0 and f"checksum mismatch for {expected.name}" in err and "hash prefix" in err
    assert not expected.exists()


def test_weights_fetch_timm_uses_the_hub_listing(tmp_path, monkeypatch):
    import safetensors.torch
    import torch

    from skinlib.models import create_model
    from skinlib.models import weights as w

    monkeypatch.setenv(w.WEIGHTS_ENV, str(tmp_path / "w"))
    state = create_model("ghostnetv2_100", num_classes=1000).state_dict()
    data = safetensors.torch.save({k: v.contiguous() for k, v in state.items()})
    srv = FileServer()
    srv.add("/api/models/timm/ghostnetv2_100.in1k", {"siblings": [
        {"rfilename": "config.json"},
        {"rfilename": "model.safetensors", "lfs": {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}}]})
    srv.add("/timm/ghostnetv2_100.in1k/resolve/main/model.safetensors", data)
    url = srv.start()
    try:
        assert main(["weights", "fetch", "ghostnetv2_100", "--mirror", url]) == 0
    finally:
        srv.stop()
    assert w.expected_weights_file("ghostnetv2_100") == tmp_path / "w" / "ghostnetv2_100.in1k.safetensors"
    model = create_model("ghostnetv2_100", pretrained=True)
    key = next(iter(state))
    assert torch.equal(model.state_dict()[key], state[key])


def test_weights_fetch_offline_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    code = main(["weights", "fetch", "mobilenet_v3_small", "--mirror", "http://127.0.0.1:9"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code != 0 and len(lines) == 1
    assert lines[0].startswith("error: cannot reach 127.0.0.1:9")
    assert "skinlib weights fetch mobilenet_v3_small" in lines[0]


def test_a_complete_part_file_is_finished_without_downloading_again(tmp_path):
    """Killed after the last byte but before the checksum: the server answers 416 and the file is finished."""
    data = b"y" * 5000
    srv = FileServer()
    srv.add("/f.bin", data)
    url = srv.start()
    (tmp_path / "f.bin.part").write_bytes(data)
    try:
        result = download(f"{url}/f.bin", tmp_path / "f.bin", progress=False,
                          checksum=Checksum("md5", hashlib.md5(data).hexdigest(), "test"))
    finally:
        srv.stop()
    assert srv.gets("/f.bin") == ["bytes=5000-"] and result.downloaded == 0
    assert (tmp_path / "f.bin").read_bytes() == data and not (tmp_path / "f.bin.part").exists()


def test_ctrl_c_during_a_download_says_it_resumes(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(dl, "download_data", interrupted)
    assert main(["data", "download", "--dest", str(tmp_path)]) == 130
    assert "the same command resumes the download" in capsys.readouterr().err


# --- hostile and clumsy servers: nothing verified is destroyed, limits hold, every failure is one line -----

def test_a_trickling_server_is_given_up_with_a_resumable_part(tmp_path):
    import time

    data = bytes(range(256)) * 200
    srv = FileServer()
    srv.add("/f.bin", data)
    srv.trickle["/f.bin"] = 0.01  # about 100 bytes/s: alive, so no single read times out
    url = srv.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(DownloadError, match=r"below the floor of 1,000 bytes/s; the [\d,]+ bytes so far are kept "
                                                r"in .*f\.bin\.part: run the same command again to resume"):
            download(f"{url}/f.bin", tmp_path / "f.bin", checksum=None, progress=False, timeout=0.5,
                     min_rate=1000)
    finally:
        srv.stop()
    assert time.perf_counter() - t0 < 5
    assert 0 < (tmp_path / "f.bin.part").stat().st_size < len(data) and not (tmp_path / "f.bin").exists()


def test_a_verified_file_survives_a_mirror_serving_other_bytes(tmp_path):
    good, other = b"g" * 4000, b"o" * 4000
    target = tmp_path / "model.safetensors"
    target.write_bytes(good)
    srv = FileServer()
    srv.add("/m", other)
    url = srv.start()
    try:
        with pytest.raises(ChecksumError):  # the mirror's listing names bytes it does not serve
            download(f"{url}/m", target, progress=False,
                     checksum=Checksum("sha256", hashlib.sha256(b"listed").hexdigest(), "mirror listing"))
    finally:
        srv.stop()
    assert target.read_bytes() == good  # still in place, under its name
    assert (tmp_path / "model.safetensors.rejected").read_bytes() == other


def test_the_timm_weights_stay_when_a_mirror_lies(tmp_path, monkeypatch, capsys):
    from skinlib.models import weights as w

    monkeypatch.setenv(w.WEIGHTS_ENV, str(tmp_path / "w"))
    installed = w.expected_weights_file("ghostnetv2_100")
    installed.parent.mkdir(parents=True)
    installed.write_bytes(b"the verified checkpoint")
    srv = FileServer()
    srv.add("/api/models/timm/ghostnetv2_100.in1k", {"siblings": [
        {"rfilename": "model.safetensors", "lfs": {"sha256": hashlib.sha256(b"x").hexdigest(), "size": 1}}]})
    srv.add("/timm/ghostnetv2_100.in1k/resolve/main/model.safetensors", b"other bytes")
    url = srv.start()
    try:
        code = main(["weights", "fetch", "ghostnetv2_100", "--mirror", url])
    finally:
        srv.stop()
    assert code != 0 and "checksum mismatch" in capsys.readouterr().err
    assert installed.read_bytes() == b"the verified checkpoint"


def test_an_archive_member_over_the_cap_is_refused_before_extraction(tmp_path, monkeypatch):
    monkeypatch.setattr(dl, "MAX_MEMBER", 1 << 20)
    files = fixture_files()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ISIC_0024306.jpg", b"\0" * (4 << 20))  # 4 MB from about 4 KB
    files["HAM10000_images_part_1.zip"] = buf.getvalue()
    assert len(buf.getvalue()) < 50_000
    srv = serve(files)
    url = srv.start()
    try:
        with pytest.raises(DownloadError, match=r"holds ISIC_0024306\.jpg, which expands to 4 MB \(the limit is 1 MB"):
            dl.download_data(tmp_path, what="ham10000", mirror=url, progress=False)
    finally:
        srv.stop()
    assert not (tmp_path / "ham10000").exists()


def test_a_part_that_fails_verify_is_fetched_again(tmp_path, capsys):
    files = fixture_files()
    bad = dict(files)
    bad["HAM10000_metadata.tab"] = files["HAM10000_metadata.tab"] + b"HAM_0000009,ISIC_0099999,nv,histo,5,male,back\n"
    srv = serve(bad)
    url = srv.start()
    try:
        with pytest.raises(DownloadError, match="fails `skinlib data verify` \\(the next call downloads it again\\)"):
            dl.download_data(tmp_path, what="ham10000", mirror=url, progress=False)
    finally:
        srv.stop()
    assert "ham10000" not in dl._complete(tmp_path)
    srv = serve(files)
    url = srv.start()
    try:
        report = dl.download_data(tmp_path, what="ham10000", mirror=url, progress=False)
    finally:
        srv.stop()
    assert report.already == [] and report.downloaded_bytes > 0 and len(load_ham10000(tmp_path)) == len(HAM)


def test_allow_unverified_applies_to_dataverse_files_too(tmp_path):
    srv = serve(fixture_files())
    doc = json.loads(srv.files["/api/datasets/:persistentId/"])
    for f in doc["data"]["latestVersion"]["files"]:
        f["dataFile"].pop("md5")
        f["dataFile"].pop("checksum")
    srv.add("/api/datasets/:persistentId/", doc)
    url = srv.start()
    try:
        with pytest.raises(DownloadError, match=r"publishes no usable checksum for .*pass --allow-unverified"):
            dl.download_data(tmp_path, what="ham10000", mirror=url, progress=False)
        dl.download_data(tmp_path, what="ham10000", mirror=url, progress=False, allow_unverified=True)
    finally:
        srv.stop()
    assert len(load_ham10000(tmp_path)) == len(HAM)
