"""Downloading one file well: resume, checksum, progress, mirrors, and a one-line offline error.

Only the standard library (``urllib``) is used, so proxies set in ``http_proxy`` /
``https_proxy`` are honoured as everywhere else. A download goes to ``<file>.part``;
an interrupted one (Ctrl-C, a dropped connection) continues from its last byte with
an HTTP range request, the next time or at once (a few retries). The finished bytes
are checked against a :class:`Checksum` *before* the file gets its final name: a
mismatch leaves ``<file>.rejected`` and raises :class:`ChecksumError` naming both.
A file already in place with the right checksum is not downloaded again.

``mirror`` (or ``$SKINLIB_MIRROR``) replaces the scheme and host of every URL and
keeps its path, so one server holding copies at the original paths (an institutional
cache, or the local test server) stands in for every source.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import math
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from skinlib.io import file_digest

log = logging.getLogger(__name__)

MIRROR_ENV = "SKINLIB_MIRROR"
USER_AGENT = "skinlib-fetch (+https://github.com/skinlib/skinlib)"
CHUNK = 1 << 20
MIN_RATE = 1024.0  # bytes per second, over the timeout: slower than this, a transfer is given up
ALGORITHMS = ("md5", "sha256", "s3-etag")
S3_PART_MIB = (8, 16, 5, 15, 32, 64, 100, 128)  # part sizes S3 upload tools use (aws cli and boto3: 8 MiB)


class DownloadError(OSError):
    """A download that cannot finish now; the message says what to do."""


class ChecksumError(DownloadError):
    """Downloaded bytes that differ from the published checksum."""


@dataclass(frozen=True)
class Checksum:
    """An expected digest: the full hex value, or (``prefix=True``) its first characters.

    ``s3-etag`` is the ETag S3 publishes: the MD5 of the bytes, or for a multipart
    upload ``md5-N``, the MD5 of the N parts' MD5s (checked for the usual part sizes).
    """

    algorithm: str
    value: str
    source: str
    prefix: bool = False

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"unknown checksum algorithm {self.algorithm!r}; valid: {', '.join(ALGORITHMS)}")
        form = r"[0-9a-f]{32}(-\d+)?" if self.algorithm == "s3-etag" else r"[0-9a-f]+"
        if not re.fullmatch(form, self.value.lower()):
            raise ValueError(f"checksum {self.value!r} is not a {self.algorithm} digest")

    def matches(self, digest: str) -> bool:
        value, digest = self.value.lower(), digest.lower()
        return digest.startswith(value) if self.prefix else digest == value

    def check(self, path: Path) -> tuple[bool, str]:
        """``(matches, what was computed)`` for a file."""
        if self.algorithm != "s3-etag":
            digest = file_digest(path, self.algorithm)
            return self.matches(digest), f"{self.algorithm} {digest}"
        if "-" not in self.value:
            digest = file_digest(path, "md5")
            return self.matches(digest), f"md5 {digest}"
        value, count = self.value.lower().split("-")
        size = path.stat().st_size
        for mib in S3_PART_MIB:
            part = mib << 20
            if math.ceil(size / part) == int(count) and _multipart_md5(path, part) == value:
                return True, self.value
        return False, f"no multipart ETag of {count} parts of {', '.join(map(str, S3_PART_MIB))} MiB"

    def describe(self) -> str:
        return f"{self.algorithm} {self.value}{'...' if self.prefix else ''} ({self.source})"


@dataclass
class FetchResult:
    """What :func:`download` did: bytes moved over the network, whether it resumed or skipped."""

    path: Path
    size: int
    downloaded: int = 0
    resumed_from: int = 0
    skipped: bool = False
    seconds: float = 0.0


def _multipart_md5(path: Path, part: int) -> str:
    outer = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(part), b""):
            outer.update(hashlib.md5(block).digest())
    return outer.hexdigest()


def mirror_url(mirror: str | None = None) -> str | None:
    """The mirror to use: the argument, else ``$SKINLIB_MIRROR``, else none."""
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    if mirror is not None:
        parts = urllib.parse.urlsplit(mirror)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"mirror {mirror!r} is not an http(s) URL; give e.g. http://127.0.0.1:8000 "
                             f"(--mirror or {MIRROR_ENV})")
    return mirror


def mirrored(url: str, mirror: str | None) -> str:
    """``url`` with its scheme and host (and a path prefix) taken from ``mirror``."""
    if not mirror:
        return url
    src, dst = urllib.parse.urlsplit(url), urllib.parse.urlsplit(mirror)
    return urllib.parse.urlunsplit((dst.scheme, dst.netloc, dst.path.rstrip("/") + src.path, src.query, ""))


def _unreachable(url: str, reason: Any, offline_hint: str) -> DownloadError:
    host = urllib.parse.urlsplit(url).netloc
    return DownloadError(f"cannot reach {host} ({reason}): this machine looks offline or behind a firewall. "
                         f"{offline_hint}")


def _open(url: str, *, start: int, timeout: float, offline_hint: str,
          method: str = "GET") -> http.client.HTTPResponse:
    """Send the request and read the answer's status line and headers, all within ``timeout`` seconds (a server
    that drips its headers byte by byte is given up, not waited on)."""
    headers = {"User-Agent": USER_AGENT}
    if start:
        headers["Range"] = f"bytes={start}-"
    request = urllib.request.Request(url, headers=headers, method=method)
    try:
        return _within(timeout, url, lambda: urllib.request.urlopen(request, timeout=timeout))
    except urllib.error.HTTPError as exc:
        if exc.code == 416:
            return exc  # type: ignore[return-value]  # the caller reads its Content-Range
        if exc.code == 404:
            raise DownloadError(f"{url} does not exist (HTTP 404); the file may have moved. Check the source "
                                f"named in `skinlib data download --help`, or point --mirror / {MIRROR_ENV} "
                                "at a copy") from None
        raise DownloadError(f"{url} answered HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise _unreachable(url, exc.reason, offline_hint) from None
    except (TimeoutError, ConnectionError) as exc:
        raise _unreachable(url, exc, offline_hint) from None
    except http.client.HTTPException as exc:  # a bad status line, a header too long, too many headers
        raise _malformed(url, exc) from None


def _malformed(url: str, exc: BaseException) -> DownloadError:
    what = f"{type(exc).__name__}: {str(exc)[:120]}" if str(exc) else type(exc).__name__
    return DownloadError(f"{url} sent a malformed HTTP answer ({what}); the server or mirror is broken: try again "
                         f"later, or point --mirror / {MIRROR_ENV} at another copy")


def _within(seconds: float, url: str, call: Any) -> Any:
    """``call()`` in a helper thread, given up after ``seconds`` (its socket is left to its own timeout)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=run, name="skinlib-http", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise DownloadError(f"{url} did not answer within {seconds:g} s (a server that sends its headers too "
                            f"slowly); try again later, raise --timeout, or point --mirror / {MIRROR_ENV} at "
                            f"another copy")
    if "error" in box:
        raise box["error"]
    return box["value"]


def head(url: str, *, mirror: str | None = None, timeout: float = 60.0, offline_hint: str = "") -> Any:
    """The response headers of a HEAD request (through the mirror); errors as for a download."""
    with _open(mirrored(url, mirror_url(mirror)), start=0, timeout=timeout, offline_hint=offline_hint,
               method="HEAD") as resp:
        return resp.headers


def fetch_json(url: str, *, mirror: str | None = None, timeout: float = 60.0, offline_hint: str = "") -> Any:
    """GET ``url`` (through the mirror) and parse its JSON body."""
    real = mirrored(url, mirror_url(mirror))
    with _open(real, start=0, timeout=timeout, offline_hint=offline_hint) as resp:
        body = _read_body(resp, real, timeout=timeout)
    try:
        return json.loads(body)
    except ValueError as exc:
        raise DownloadError(f"{real} did not return JSON ({exc}); is the mirror serving the original paths?") from None


MAX_LISTING_BYTES = 20 * 2**20


def _read_body(resp: Any, url: str, *, timeout: float, max_bytes: int = MAX_LISTING_BYTES,
               min_rate: float = MIN_RATE) -> bytes:
    """A small response body (a listing), read as it arrives: more than ``max_bytes``, or slower than
    ``min_rate`` bytes/s once ``timeout`` seconds have passed, is given up with the URL named."""
    read = getattr(resp, "read1", resp.read)
    chunks, size, t0 = [], 0, time.monotonic()
    try:
        while block := read(CHUNK):
            chunks.append(block)
            size += len(block)
            elapsed = time.monotonic() - t0
            if size > max_bytes:
                raise DownloadError(f"{url} sent more than {max_bytes // 2**20} MB for a listing; is the mirror "
                                    f"serving the original paths?")
            if elapsed > timeout and size < min_rate * elapsed:
                raise DownloadError(f"{url} sent {size:,} bytes in {elapsed:.0f} s, below the floor of "
                                    f"{min_rate:,.0f} bytes/s; try again later, raise --timeout, or point --mirror "
                                    f"/ {MIRROR_ENV} at another copy")
    except http.client.HTTPException as exc:
        raise _malformed(url, exc) from None
    except (ConnectionError, TimeoutError) as exc:
        raise DownloadError(f"{url} closed the connection while sending its answer ({exc}); try again") from None
    return b"".join(chunks)


def _total_from(resp: Any, start: int) -> tuple[int, int | None]:
    """``(first byte, total size or None)`` of a 200/206/416 response."""
    status = getattr(resp, "status", None) or resp.getcode()
    content_range = resp.headers.get("Content-Range", "")
    if status == 206:
        m = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", content_range)
        if not m or int(m.group(1)) != start:
            raise DownloadError(f"server answered a range request for byte {start} with {content_range!r}")
        return start, None if m.group(3) == "*" else int(m.group(3))
    if status == 416:
        m = re.match(r"bytes \*/(\d+)", content_range)
        return -1, int(m.group(1)) if m else None
    length = resp.headers.get("Content-Length")
    if length is not None and not length.strip().isdigit():
        raise DownloadError(f"{resp.geturl() if hasattr(resp, 'geturl') else 'the server'} sent Content-Length "
                            f"{length[:40]!r}, not a number of bytes; the server or mirror is broken")
    return 0, int(length) if length is not None else None


def _stream(resp: Any, part: Path, first: int, total: int | None, *, real: str, name: str, timeout: float,
            min_rate: float, progress: bool) -> int:
    """Write the response's body into ``part`` from byte ``first`` (a dropped connection ends it quietly: the
    caller resumes); return the bytes received. A transfer below ``min_rate`` over ``timeout`` seconds raises
    :class:`DownloadError`, what arrived kept."""
    received = 0
    with open(part, "r+b" if first else "wb") as fh, tqdm(
            total=total, initial=first, unit="B", unit_scale=True, unit_divisor=1024,
            desc=name, disable=not progress, leave=False) as bar:
        fh.seek(first)
        fh.truncate()
        read = getattr(resp, "read1", resp.read)  # read1: what has arrived, so the rate is seen
        window_start, window_bytes = time.monotonic(), 0
        try:
            while block := read(CHUNK):
                fh.write(block)
                received += len(block)
                window_bytes += len(block)
                bar.update(len(block))
                if time.monotonic() - window_start >= timeout:
                    if window_bytes < min_rate * timeout:
                        fh.flush()
                        raise DownloadError(
                            f"{urllib.parse.urlsplit(real).netloc} sent {window_bytes:,} bytes of "
                            f"{name} in {timeout:.0f} s, below the floor of {min_rate:,.0f} bytes/s; "
                            f"the {first + received:,} bytes so far are kept in {part}: run the same "
                            "command again to resume (or --timeout to wait longer, --mirror for another "
                            "copy)")
                    window_start, window_bytes = time.monotonic(), 0
        except (http.client.IncompleteRead, ConnectionError, TimeoutError) as exc:
            log.debug("read of %s stopped: %r", real, exc)
        fh.flush()
        os.fsync(fh.fileno())
    return received


def _install(part: Path, target: Path, checksum: Checksum | None) -> None:
    """Give verified bytes their name; a mismatch moves them to ``<target>.rejected`` and raises."""
    if checksum is not None:
        ok, got = checksum.check(part)
        if not ok:
            rejected = target.with_name(target.name + ".rejected")
            os.replace(part, rejected)
            raise ChecksumError(
                f"checksum mismatch for {target.name}: expected {checksum.describe()}, got {got}. "
                f"Nothing was extracted or installed; the bytes are kept in {rejected} for inspection. "
                "Run the same command again to download it afresh (or check the mirror's copy)")
    os.replace(part, target)


def download(url: str, target: str | os.PathLike, *, checksum: Checksum | None, mirror: str | None = None,
             retries: int = 3, timeout: float = 60.0, progress: bool = True, offline_hint: str = "",
             backoff: float = 1.0, min_rate: float = MIN_RATE) -> FetchResult:
    """Download ``url`` to ``target`` (resuming ``target.part``), verify it, then give it its name.

    A transfer that moves fewer than ``min_rate`` bytes per second over ``timeout`` seconds
    is given up (a stalled or trickling server), as is one whose socket is silent for ``timeout``.
    Raises :class:`DownloadError` (offline, 404, too slow, too many dropped connections: the
    partial file is kept) or :class:`ChecksumError` (nothing keeps the final name; a file
    already at ``target`` is replaced only by verified bytes).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if target.is_file():
        if checksum is None or checksum.check(target)[0]:
            log.info("%s is already here and verified; not downloading it again", target)
            return FetchResult(target, target.stat().st_size, skipped=True)
        # kept in place until a replacement has been downloaded *and* verified: a wrong mirror destroys nothing
        log.warning("%s does not match %s; downloading a replacement (the present file stays until the new one "
                    "is verified)", target, checksum.describe())
    real = mirrored(url, mirror_url(mirror))
    part = target.with_name(target.name + ".part")
    result = FetchResult(target, 0)
    tries = 0
    while True:
        start = part.stat().st_size if part.is_file() else 0
        resp = _open(real, start=start, timeout=timeout, offline_hint=offline_hint)
        try:
            first, total = _total_from(resp, start)
            if first == -1:  # 416: what we have is the whole file (or more than it)
                if total is not None and start == total:
                    break
                if start == 0:
                    raise DownloadError(f"{real} answered HTTP 416 (range not satisfiable) to a request for the "
                                        f"whole file; the server or mirror is broken")
                part.unlink(missing_ok=True)  # more than the file: start again, once
                continue
            if tries == 0 and first:
                result.resumed_from = first
                log.info("resuming %s at %.1f MB", target.name, first / 1e6)
            result.downloaded += _stream(resp, part, first, total, real=real, name=target.name, timeout=timeout,
                                         min_rate=min_rate, progress=progress)
        finally:
            resp.close()
        have = part.stat().st_size
        if total is None or have >= total:
            break
        tries += 1
        if tries > retries:
            raise DownloadError(
                f"the connection to {urllib.parse.urlsplit(real).netloc} closed after {have:,} of {total:,} bytes "
                f"of {target.name} ({tries} tries); the partial file {part} is kept: run the same command again "
                "to resume")
        log.warning("connection closed after %s of %s bytes of %s; resuming (try %d of %d)",
                    f"{have:,}", f"{total:,}", target.name, tries, retries)
        time.sleep(backoff * tries)
    _install(part, target, checksum)
    result.size = target.stat().st_size
    result.seconds = time.perf_counter() - t0
    log.info("downloaded %s (%.1f MB in %.1f s)", target.name, result.size / 1e6, result.seconds)
    return result
