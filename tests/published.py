"""The published data files in miniature (HAM10000 on Dataverse, the ISIC 2018 test set on S3), a few images
each, and a local server laid out like both: what the download and launch tests fetch."""

from __future__ import annotations

import hashlib
import io
import zipfile

import numpy as np
from PIL import Image

from tests.fileserver import FileServer

HAM = [("ISIC_0024306", "HAM_0000001", "nv"), ("ISIC_0024307", "HAM_0000001", "nv"),
       ("ISIC_0024308", "HAM_0000002", "mel"), ("ISIC_0024309", "HAM_0000003", "bkl"),
       ("ISIC_0024310", "HAM_0000004", "bcc"), ("ISIC_0024311", "HAM_0000005", "df"),
       ("ISIC_0024312", "HAM_0000006", "vasc")]
ISIC = [("ISIC_0034524", "NV"), ("ISIC_0034525", "MEL"), ("ISIC_0034526", "AKIEC")]


def jpeg(seed: int, size: tuple[int, int] = (60, 45)) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def png_mask(seed: int) -> bytes:
    buf = io.BytesIO()
    mask = np.zeros((45, 60), dtype=np.uint8)
    mask[10 + seed % 5:30, 15:40] = 255
    Image.fromarray(mask).save(buf, "PNG")
    return buf.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def fixture_files() -> dict[str, bytes]:
    """The six published files, a few images each, laid out as their publishers do."""
    meta = "lesion_id,image_id,dx,dx_type,age,sex,localization\n" + "".join(
        f"{lesion},{image},{dx},histo,50.0,male,back\n" for image, lesion, dx in HAM)
    onehot = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    gt = "image," + ",".join(onehot) + "\n" + "".join(
        f"{image}," + ",".join("1.0" if c == dx else "0.0" for c in onehot) + "\n" for image, dx in ISIC)
    return {
        "HAM10000_images_part_1.zip": zip_bytes({f"{i}.jpg": jpeg(k) for k, (i, _, _) in enumerate(HAM[:4])}),
        "HAM10000_images_part_2.zip": zip_bytes({f"{i}.jpg": jpeg(k + 4) for k, (i, _, _) in enumerate(HAM[4:])}),
        "HAM10000_metadata.tab": meta.encode(),
        "HAM10000_segmentations_lesion_tschandl.zip": zip_bytes(
            {f"HAM10000_segmentations_lesion_tschandl/{i}_segmentation.png": png_mask(k)
             for k, (i, _, _) in enumerate(HAM)} | {"__MACOSX/._x_segmentation.png": b"junk"}),
        "ISIC2018_Task3_Test_Input.zip": zip_bytes(
            {f"ISIC2018_Task3_Test_Input/{i}.jpg": jpeg(k + 20) for k, (i, _) in enumerate(ISIC)}
            | {"ISIC2018_Task3_Test_Input/LICENSE.txt": b"CC-BY-NC"}),
        "ISIC2018_Task3_Test_GroundTruth.zip": zip_bytes(
            {"ISIC2018_Task3_Test_GroundTruth/ISIC2018_Task3_Test_GroundTruth.csv": gt.encode()}),
    }


def serve(files: dict[str, bytes], *, md5: dict[str, str] | None = None) -> FileServer:
    """A server laid out like Dataverse's native API plus the ISIC S3 bucket."""
    server = FileServer()
    listing = []
    for k, (name, data) in enumerate(files.items()):
        if name.startswith("ISIC2018"):
            server.add(f"/2018/{name}", data, etag=True)
            continue
        digest = (md5 or {}).get(name, hashlib.md5(data).hexdigest())
        entry = {"id": 1000 + k, "filename": name, "filesize": len(data), "md5": digest,
                 "checksum": {"type": "MD5", "value": digest}}
        if name.endswith(".tab"):
            entry["originalFileFormat"] = "text/csv"
        listing.append({"label": name, "dataFile": entry})
        server.add(f"/api/access/datafile/{1000 + k}", data)
    server.add("/api/datasets/:persistentId/", {"status": "OK", "data": {"latestVersion": {"files": listing}}})
    return server
