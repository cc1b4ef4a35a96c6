"""``skinlib data download``: HAM10000, its lesion masks and the ISIC 2018 test set, fetched and laid out.

Sources (the files as their publishers name them):

* Harvard Dataverse, doi:10.7910/DVN/DBW86T: ``HAM10000_images_part_1.zip``,
  ``HAM10000_images_part_2.zip``, ``HAM10000_metadata`` (a tabular file, fetched in its
  original CSV form) and ``HAM10000_segmentations_lesion_tschandl.zip``. Checksums: the
  MD5 that Dataverse publishes for every file in the dataset's metadata (its native API),
  read at download time.
* ISIC challenge site (the S3 bucket its data page links), 2018 Task 3:
  ``ISIC2018_Task3_Test_Input.zip`` and ``ISIC2018_Task3_Test_GroundTruth.zip``.
  Checksums: the object's ETag, which S3 publishes with every object (the MD5 of the
  bytes, or for a multipart upload the MD5 of the parts' MD5s, ``-N``).

The layout written under ``dest`` is the one the loader reads (and the one of
``../shared/data``): ``ham10000/{images,masks}/`` + ``ham10000/HAM10000_metadata.csv``,
``isic2018_task3_test/images/`` + ``isic2018_task3_test/ISIC2018_Task3_Test_GroundTruth.csv``.
Archives are downloaded into ``dest/.downloads/`` (resumable, verified), each part is
extracted into a staging folder and renamed into place when complete, then checked
with ``data verify``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from skinlib.data.paths import DATA_ENV, resolve_data_dir
from skinlib.data.verify import verify as verify_dataset
from skinlib.fetch import Checksum, DownloadError, FetchResult, download, fetch_json, head, mirror_url, mirrored
from skinlib.io import atomic_write_json, replace_dir

log = logging.getLogger(__name__)

DATAVERSE = "https://dataverse.harvard.edu"
HAM10000_DOI = "doi:10.7910/DVN/DBW86T"
ISIC_S3 = "https://isic-challenge-data.s3.amazonaws.com"

CLOUD_ENV = ("COLAB_RELEASE_TAG", "COLAB_GPU", "BINDER_SERVICE_HOST", "BINDER_REQUEST")
"""Environment variables that Colab and Binder sessions set: there, a chapter fetches missing data itself."""

PARTS: tuple[str, ...] = ("ham10000", "masks", "isic2018_test")
"""What ``--what`` can name: HAM10000 images + metadata, its lesion masks, the ISIC 2018 Task 3 test set."""

DOWNLOADS = ".downloads"
COMPLETE_FILE = "complete.json"


@dataclass(frozen=True)
class Source:
    """One published file: where it comes from and what part of the layout it fills."""

    name: str  # the publisher's file name (a Dataverse file is matched by its stem)
    part: str
    host: str  # "dataverse" | "isic"
    target: str  # path under dest: a folder of archive members, or a table (.csv) file
    member: str = ""  # regex of the archive members to keep (their base names); "" = not an archive


SOURCES: tuple[Source, ...] = (
    Source("HAM10000_images_part_1.zip", "ham10000", "dataverse", "ham10000/images", r"ISIC_\d+\.jpg"),
    Source("HAM10000_images_part_2.zip", "ham10000", "dataverse", "ham10000/images", r"ISIC_\d+\.jpg"),
    Source("HAM10000_metadata.tab", "ham10000", "dataverse", "ham10000/HAM10000_metadata.csv"),
    Source("HAM10000_segmentations_lesion_tschandl.zip", "masks", "dataverse", "ham10000/masks",
           r"ISIC_\d+_segmentation\.png"),
    Source("ISIC2018_Task3_Test_Input.zip", "isic2018_test", "isic", "isic2018_task3_test/images", r"ISIC_\d+\.jpg"),
    Source("ISIC2018_Task3_Test_GroundTruth.zip", "isic2018_test", "isic",
           "isic2018_task3_test/ISIC2018_Task3_Test_GroundTruth.csv", r"ISIC2018_Task3_Test_GroundTruth\.csv"),
)

OFFLINE_HINT = ("Download on a connected machine with `skinlib data download --dest DIR`, copy DIR here and set "
                "SKINLIB_DATA_DIR=DIR; or pass --mirror URL (or SKINLIB_MIRROR) for a reachable copy; "
                "proxies are read from https_proxy.")


@dataclass
class DownloadReport:
    """What :func:`download_data` did, per file and per part."""

    dest: Path
    fetched: dict[str, FetchResult] = field(default_factory=dict)
    extracted: dict[str, int] = field(default_factory=dict)
    already: list[str] = field(default_factory=list)
    verified: dict[str, str] = field(default_factory=dict)

    @property
    def downloaded_bytes(self) -> int:
        return sum(r.downloaded for r in self.fetched.values())


def parse_parts(what: str | Iterable[str] | None) -> list[str]:
    """``"ham10000,masks"`` (or a list) -> checked part names, in :data:`PARTS` order."""
    if what is None:
        return list(PARTS)
    names = [w.strip() for w in (what.split(",") if isinstance(what, str) else what) if w.strip()]
    unknown = [n for n in names if n not in PARTS]
    if unknown or not names:
        raise ValueError(f"unknown data part(s) {', '.join(unknown) or '(none given)'}; valid: {', '.join(PARTS)} "
                         "(comma-separated)")
    return [p for p in PARTS if p in names]


# --- where each file comes from, and its checksum ---------------------------------------------------------

def dataverse_files(*, mirror: str | None, timeout: float) -> dict[str, dict]:
    """The dataset's files as Dataverse lists them (native API), keyed by file-name stem."""
    url = f"{DATAVERSE}/api/datasets/:persistentId/?persistentId={HAM10000_DOI}"
    doc = fetch_json(url, mirror=mirror, timeout=timeout, offline_hint=OFFLINE_HINT)
    real = mirrored(url, mirror_url(mirror))
    try:
        files = doc["data"]["latestVersion"]["files"]
    except (KeyError, TypeError):
        raise DownloadError(f"{real} did not return a Dataverse dataset (no data.latestVersion.files)") from None
    if not isinstance(files, list):
        raise DownloadError(f"{real} lists its files as a {type(files).__name__}, not a list")
    listing = {}
    for i, entry in enumerate(files):
        data = entry.get("dataFile") if isinstance(entry, dict) else None
        if not isinstance(data, dict):
            continue
        name, ident = data.get("filename"), data.get("id")
        if not isinstance(name, str) or not name or isinstance(ident, bool) or not isinstance(ident, (int, str)):
            raise DownloadError(f"{real} lists file {i} without a usable filename and id "
                                f"({str(data)[:80]}); the listing is broken: try again later, or point --mirror "
                                f"at another copy")
        listing[Path(name).stem] = data
    return listing


def dataverse_source(src: Source, listing: dict[str, dict], *,
                     allow_unverified: bool = False) -> tuple[str, Checksum | None]:
    """Download URL and published MD5 of a Dataverse file (tabular files in their original format)."""
    entry = listing.get(Path(src.name).stem)
    if entry is None:
        raise DownloadError(f"{src.name} is not among the files of {HAM10000_DOI} "
                            f"(listed: {', '.join(sorted(listing)) or 'none'}); the record may have changed")
    checksum = entry.get("checksum") if isinstance(entry.get("checksum"), dict) else {}
    value = entry.get("md5") or checksum.get("value")
    kind = str(checksum.get("type") or "MD5").lower().replace("-", "")
    if value is not None and not (isinstance(value, str) and re.fullmatch(r"[0-9a-fA-F]{32,64}", value)):
        value = None  # a checksum that is not hex digits checks nothing
    url = f"{DATAVERSE}/api/access/datafile/{entry['id']}"
    if entry.get("originalFileFormat"):  # ingested table: its checksum is the uploaded original's
        url += "?format=original"
    if not value or kind not in ("md5", "sha256"):
        if allow_unverified:
            return url, None
        raise DownloadError(f"Dataverse publishes no usable checksum for {src.name}; pass --allow-unverified to "
                            "accept it unchecked (data verify still runs)")
    return url, Checksum(kind, value, f"Harvard Dataverse metadata of {HAM10000_DOI}")


def s3_etag_checksum(url: str, *, mirror: str | None, timeout: float) -> Checksum | None:
    """The ETag of an S3 object as a checksum (``None`` when the server sends none that S3 rules can check)."""
    etag = head(url, mirror=mirror, timeout=timeout, offline_hint=OFFLINE_HINT).get("ETag", "").strip('"').lower()
    if re.fullmatch(r"[0-9a-f]{32}(-\d+)?", etag):
        return Checksum("s3-etag", etag, "ETag of the ISIC S3 object")
    return None


# --- extraction ------------------------------------------------------------------------------------------

MAX_MEMBER = 64 * 1024 * 1024
"""The largest archive member extracted: a HAM10000 or ISIC image is well under 1 MB, a table a few MB."""


def _extract_members(archive: Path, pattern: str, into: Path) -> int:
    """Copy the members whose base name matches ``pattern`` into ``into`` (flat); return how many.

    Member sizes are checked before anything is written: a member over :data:`MAX_MEMBER`
    (a compression bomb, or the wrong archive) refuses the archive, and so does a total
    larger than the free space of ``into``'s disk.
    """
    keep = re.compile(pattern)
    count = 0
    try:
        with zipfile.ZipFile(archive) as zf:
            wanted = [i for i in zf.infolist() if not i.is_dir() and "__MACOSX" not in i.filename
                      and keep.fullmatch(os.path.basename(i.filename.replace("\\", "/")))]
            big = [i for i in wanted if i.file_size > MAX_MEMBER]
            if big:
                raise DownloadError(f"{archive.name} holds {big[0].filename}, which expands to "
                                    f"{big[0].file_size / 2**20:,.0f} MB (the limit is {MAX_MEMBER / 2**20:.0f} MB "
                                    "per file); this is not the published archive: delete it, and check the mirror")
            need, free = sum(i.file_size for i in wanted), shutil.disk_usage(into).free
            if need > free:
                raise DownloadError(f"extracting {archive.name} needs {need / 2**30:.1f} GB in {into}, but "
                                    f"{free / 2**30:.1f} GB are free; free space there or pass another --dest")
            for info in wanted:
                base = os.path.basename(info.filename.replace("\\", "/"))
                out = into / base
                if out.exists():
                    raise DownloadError(f"{archive.name} holds {base} twice (or another archive of the part does)")
                with zf.open(info) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                count += 1
    except zipfile.BadZipFile as exc:
        raise DownloadError(f"{archive} is not a readable zip archive ({exc}); delete it and download again") from None
    if count == 0:
        raise DownloadError(f"{archive.name} holds no file named like {pattern}; is it the right archive?")
    return count


def install_part(part: str, archives: dict[str, Path], dest: Path) -> int:
    """Extract/copy the downloaded files of ``part`` into the layout, each target appearing whole; return files.

    Folders of images are built in a staging folder and renamed into place; the
    tables come last, so a data set is found by the loader only once its images are there.
    """
    staging_root = dest / DOWNLOADS / f"staging-{part}"
    if staging_root.exists():
        shutil.rmtree(staging_root)
    staging_root.mkdir(parents=True)
    sources = [s for s in SOURCES if s.part == part]
    total = 0
    folders: dict[str, Path] = {}
    tables: list[tuple[Path, Path]] = []
    for k, src in enumerate(sources):
        if src.target.endswith(".csv"):
            staged = staging_root / f"table-{k}"
            if src.member:
                staged.mkdir()
                total += _extract_members(archives[src.name], src.member, staged)
                (staged,) = list(staged.iterdir())
            else:
                shutil.copyfile(archives[src.name], staged)
                total += 1
            tables.append((staged, dest / src.target))
        else:
            into = folders.setdefault(src.target, staging_root / src.target.replace("/", "__"))
            into.mkdir(exist_ok=True)
            total += _extract_members(archives[src.name], src.member, into)
    for target, staged in folders.items():
        replace_dir(staged, dest / target)
    for staged, final in tables:
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, final)
    shutil.rmtree(staging_root)
    return total


# --- the command -----------------------------------------------------------------------------------------

def _complete(dest: Path) -> dict[str, dict[str, str]]:
    path = dest / DOWNLOADS / COMPLETE_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _present(part: str, dest: Path) -> bool:
    return all((dest / s.target).exists() for s in SOURCES if s.part == part)


def download_data(dest: str | os.PathLike = "data", *, what: str | Iterable[str] | None = None,
                  mirror: str | None = None, keep_archives: bool = False, allow_unverified: bool = False,
                  force: bool = False, verify: bool = True, timeout: float = 60.0, retries: int = 3,
                  progress: bool = True) -> DownloadReport:
    """Fetch, check and lay out the parts named by ``what`` (default: all) under ``dest``; see module doc."""
    parts = parse_parts(what)
    mirror = mirror_url(mirror)
    dest = Path(dest).expanduser().resolve()
    if dest.is_file():
        raise ValueError(f"--dest {dest} is a file; give a folder (it is created if missing)")
    downloads = dest / DOWNLOADS
    downloads.mkdir(parents=True, exist_ok=True)
    report = DownloadReport(dest)
    complete = _complete(dest)
    todo = []
    for part in parts:
        if not force and part in complete and _present(part, dest):
            log.info("%s: already downloaded and extracted into %s (use --force to fetch it again)", part, dest)
            report.already.append(part)
        else:
            todo.append(part)
    listing = None
    for part in todo:
        archives: dict[str, Path] = {}
        sums: dict[str, str] = {}
        for src in (s for s in SOURCES if s.part == part):
            if src.host == "dataverse":
                if listing is None:
                    listing = dataverse_files(mirror=mirror, timeout=timeout)
                url, checksum = dataverse_source(src, listing, allow_unverified=allow_unverified)
            else:
                url = f"{ISIC_S3}/2018/{src.name}"
                checksum = s3_etag_checksum(url, mirror=mirror, timeout=timeout)
            if checksum is None and not allow_unverified:
                raise DownloadError(f"{mirrored(url, mirror)} publishes no checksum (ETag) for {src.name}; "
                                    "pass --allow-unverified to accept it unchecked (data verify still runs)")
            target = downloads / src.name
            result = download(url, target, checksum=checksum, mirror=mirror, timeout=timeout, retries=retries,
                              progress=progress, offline_hint=OFFLINE_HINT)
            if checksum is None:
                log.warning("%s was not verified by a checksum (the server published none)", src.name)
            report.fetched[src.name] = result
            archives[src.name] = target
            sums[src.name] = f"{checksum.algorithm} {checksum.value}" if checksum else "unverified"
        report.extracted[part] = install_part(part, archives, dest)
        complete[part] = sums
        atomic_write_json(downloads / COMPLETE_FILE, complete)  # recorded, and taken back if verify fails
        if not keep_archives:
            for path in archives.values():
                path.unlink()
        log.info("%s: %d files in place under %s", part, report.extracted[part], dest)
    if verify:
        _verify_parts(parts, dest, report)
    return report


def _verify_parts(parts: Sequence[str], dest: Path, report: DownloadReport) -> None:
    """``skinlib data verify`` on each downloaded data set; one that fails is no longer recorded as complete
    (the next call downloads and extracts it again) and stops with the verifier's report."""

    for dataset in ("ham10000", "isic2018_test"):
        if dataset in parts:
            rep = verify_dataset(dest, dataset=dataset)
            report.verified[dataset] = rep.to_text()
            if not rep.ok:
                complete = _complete(dest)
                if complete.pop(dataset, None) is not None:
                    atomic_write_json(dest / DOWNLOADS / COMPLETE_FILE, complete)
                raise DownloadError(f"the downloaded {dataset} fails `skinlib data verify` (the next call "
                                    f"downloads it again):\n{rep.to_text()}")


def in_cloud() -> bool:
    """Whether this runs in a Colab or Binder session (a launch button's notebook)."""
    return "google.colab" in sys.modules or any(os.environ.get(k) for k in CLOUD_ENV)


def ensure_data(dest: str | os.PathLike = "data", *, data_dir: str | os.PathLike | None = None,
                download: bool | None = None, mirror: str | None = None) -> Path:
    """The data directory for a chapter: ``data_dir`` when given (papermill's ``-p data_dir PATH``), else found
    the usual way; when absent and ``download`` (default: only in Colab/Binder), fetched into ``data_dir`` (or
    ``dest``) and exported as ``SKINLIB_DATA_DIR``. Elsewhere a missing data set raises the usual error naming
    `skinlib data download`; present data is never touched."""

    try:
        return resolve_data_dir(data_dir)
    except FileNotFoundError:
        if not (in_cloud() if download is None else download):
            raise
    target = data_dir or dest
    log.info("no data here: fetching it into %s (the first time takes a few minutes)", target)
    report = download_data(target, mirror=mirror)
    os.environ[DATA_ENV] = str(report.dest)
    return report.dest
