"""The data fingerprint's cost on all of HAM10000: content digests hashed cold, then remembered (warm).

Usage: ``python benchmarks/fingerprint_cost.py [--data-dir DIR]``. The digest memo goes to a
fresh temporary cache folder, so the first call hashes every image; the page cache is not
dropped (that needs root), so "cold" means "not remembered", with the files likely in memory.
Prints both times and their ratio, measured in one run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        os.environ["SKINLIB_CACHE_DIR"] = cache
        from skinlib.data.index import load_ham10000
        from skinlib.data.selection import fingerprint

        index = load_ham10000(args.data_dir)
        t0 = time.perf_counter()
        cold = fingerprint(index)
        t1 = time.perf_counter()
        warm = fingerprint(index)
        t2 = time.perf_counter()
        assert cold == warm
        print(f"{len(index)} images, data key {cold.key}")
        print(f"cold (every image hashed): {t1 - t0:.2f} s")
        print(f"warm (digests remembered): {t2 - t1:.3f} s")
        print(f"cold / warm: {(t1 - t0) / (t2 - t1):.1f}x")


if __name__ == "__main__":
    main()
