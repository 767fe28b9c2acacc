"""Overlap search of an external collection against a large training set: cost vs the baseline.

Baseline (measured in the same run): :func:`cxrlib.data.dedup.hamming_neighbors` over the
training + external hashes together (what ``find_duplicates`` does first), i.e. every
training x training pair within the radius is searched too. cxrlib.validation searches only
external x training pairs (:func:`cxrlib.validation.collections.training_copies`: a BallTree on
the training hashes queried by the external ones).

Hashes are drawn at random (64-bit), with the external set holding a few exact hash copies of
training images, so only the hash search is timed (thumbnail checks need images; none here).

    .venv/bin/python benchmarks/bench_external_overlap.py --train 20000 --external 500
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=20000, help="training images (NIH: 112,120)")
    ap.add_argument("--external", type=int, default=500, help="external images")
    ap.add_argument("--max-distance", type=int, default=10)
    args = ap.parse_args()

    from sklearn.neighbors import BallTree

    from cxrlib.data import dedup

    rng = np.random.default_rng(0)
    hexes = [f"{v:016x}" for v in rng.integers(0, 2**63, size=args.train + args.external, dtype=np.int64)]
    train, ext = hexes[:args.train], hexes[args.train:]
    ext[:5] = train[:5]  # five copies to find
    r = (args.max_distance + 0.5) / dedup.HASH_BITS

    t0 = time.perf_counter()
    pairs = dedup.hamming_neighbors(train + ext, args.max_distance)
    base = time.perf_counter() - t0
    found_base = {j - args.train for i, j, _ in pairs if i < args.train <= j}

    t0 = time.perf_counter()
    tree = BallTree(dedup.hash_bits(train), metric="hamming")
    near = tree.query_radius(dedup.hash_bits(ext), r=r)
    ours = time.perf_counter() - t0
    found = {i for i, c in enumerate(near) if len(c)}

    assert found == found_base, (found, found_base)
    print(pd.DataFrame([{"train": args.train, "external": args.external, "pairs found": len(found),
                         "all-pairs search s": round(base, 2), "external x training s": round(ours, 2),
                         "ratio": round(base / ours, 1)}]).to_string(index=False))


if __name__ == "__main__":
    main()
