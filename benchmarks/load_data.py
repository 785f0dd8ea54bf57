"""Time ``rev_nets.data.load`` and ``rev_nets.data.fingerprint`` on the full MNIST and CIFAR-10 splits from a local
folder.

Usage: python -m benchmarks.load_data --data_dir ../shared/datasets [--repeats 3]

Prints the median wall time of ``repeats`` loads per split (files read, checked
and decoded to uint8 NHWC; no caching between repeats beyond the OS page cache)
and of ``repeats`` fingerprints of the loaded split (what a run records in its
config.json to refuse a resume on other data).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from rev_nets import data

CASES = (("mnist", "train"), ("mnist", "test"), ("cifar10", "train"), ("cifar10", "test"))


def time_load(name: str, split: str, data_dir: str, repeats: int) -> tuple[float, data.Dataset]:
    """Median seconds of ``repeats`` calls of load(name, split, data_dir), and the last result."""
    times, ds = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        ds = data.load(name, split, data_dir)
        times.append(time.perf_counter() - start)
    return statistics.median(times), ds


def time_fingerprint(ds: data.Dataset, repeats: int) -> float:
    """Median seconds of ``repeats`` calls of data.fingerprint on the one split ``ds``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        data.fingerprint({"split": ds})
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=None, help=f"data folder (default: ${data.DATA_DIR_ENV})")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    data_dir = data.resolve_data_dir(args.data_dir)
    if data_dir is None:
        print(f"pass --data_dir or set {data.DATA_DIR_ENV}: this benchmark times local files only", file=sys.stderr)
        return 2
    print(f"load() from {data_dir}, median of {args.repeats}")
    print(f"{'dataset':<10} {'split':<6} {'images':>18} {'MB':>7} {'seconds':>8} {'fingerprint s':>14}")
    try:
        for name, split in CASES:
            seconds, ds = time_load(name, split, data_dir, args.repeats)
            shape = "x".join(map(str, ds.images.shape))
            print(
                f"{name:<10} {split:<6} {shape:>18} {ds.images.nbytes / 1e6:>7.1f} {seconds:>8.3f} "
                f"{time_fingerprint(ds, args.repeats):>14.4f}"
            )
    except data.DataError as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
