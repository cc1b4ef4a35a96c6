"""Download throughput against the local test server: whole, interrupted + resumed, and finished.

One run, one random file served from 127.0.0.1 (tests/fileserver.py, range requests):

1. a whole download (MB/s, checksum included);
2. the same file cut off at half by the server, then the same call again: the
   resume moves only the missing half (bytes over the wire are counted);
3. the call once more on the finished file: nothing is downloaded (it is verified).

    python benchmarks/download_throughput.py --mb 256
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from skinlib.fetch import Checksum, DownloadError, download
from tests.fileserver import FileServer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=256, help="file size in MiB")
    args = ap.parse_args()
    data = np.random.default_rng(0).integers(0, 255, (args.mb << 20,), dtype=np.uint8).tobytes()
    check = Checksum("sha256", hashlib.sha256(data).hexdigest(), "benchmark")
    srv = FileServer()
    srv.add("/f.bin", data)
    url = srv.start() + "/f.bin"
    size = len(data) / 1e6
    try:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            download(url, Path(tmp) / "whole.bin", checksum=check, progress=False)
            whole = time.perf_counter() - t0
            srv.drops["/f.bin"] = [len(data) // 2]
            sent0 = srv.sent
            t0 = time.perf_counter()
            try:
                download(url, Path(tmp) / "cut.bin", checksum=check, progress=False, retries=0)
            except DownloadError:
                pass
            cut = time.perf_counter() - t0
            sent1 = srv.sent
            t0 = time.perf_counter()
            resumed = download(url, Path(tmp) / "cut.bin", checksum=check, progress=False)
            resume = time.perf_counter() - t0
            resent = srv.sent - sent1
            t0 = time.perf_counter()
            again = download(url, Path(tmp) / "cut.bin", checksum=check, progress=False)
            finished = time.perf_counter() - t0
            assert again.skipped and (Path(tmp) / "cut.bin").read_bytes() == data
    finally:
        srv.stop()
    print(f"file: {size:.0f} MB, sha256 checked each time")
    print(f"whole download:           {whole:6.2f} s  {size / whole:7.1f} MB/s")
    print(f"cut at half:              {cut:6.2f} s  {(sent1 - sent0) / 1e6:7.1f} MB sent")
    print(f"resumed:                  {resume:6.2f} s  {resent / 1e6:7.1f} MB sent (from {resumed.resumed_from:,})")
    print(f"finished file, called again: {finished:6.2f} s  {again.downloaded / 1e6:4.1f} MB sent (verified only)")
    print(f"resume / whole: bytes {resent / len(data):.2f}, time {resume / whole:.2f}")


if __name__ == "__main__":
    main()
