"""Benchmark `mura score` on a MURA-sized hidden test (207 studies, 6 radiologists).

Measures, in one run on the same data:
1. the whole `mura score` process, wall clock (target: under 1 s);
2. the bootstrap itself -- 10,000 resamples of the model and three radiologists against the
   gold standard, with the paired differences -- done by the kit (multinomial draws on joint
   confusion cells) and by the naive loop (resample study indices, call
   sklearn.metrics.cohen_kappa_score per rater) (target: at least 100 times faster).

Run: .venv/bin/python bench/bench_score.py [--resamples 10000] [--naive-resamples 10000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # example_data: the tests' fixtures

import example_data  # noqa: E402

from scorer.pipeline import score_group  # noqa: E402
from scorer.settings import Settings  # noqa: E402


def naive_bootstrap(truth, raters: dict, resamples: int, seed: int) -> dict:
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(seed)
    n = len(truth)
    kappas = {name: np.empty(resamples) for name in raters}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for b in range(resamples):
            idx = rng.integers(0, n, n)
            for name, reads in raters.items():
                kappas[name][b] = cohen_kappa_score(truth[idx], reads[idx])
    out = {name: np.nanpercentile(k, [2.5, 97.5]) for name, k in kappas.items()}
    for name in list(raters)[1:]:
        out[f"model-{name}"] = np.nanpercentile(kappas["model"] - kappas[name], [2.5, 97.5])
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--resamples", type=int, default=10_000)
    parser.add_argument("--naive-resamples", type=int, default=10_000)
    parser.add_argument("--process-runs", type=int, default=7)
    args = parser.parse_args()

    test = example_data.make_test(seed=0)
    pred = example_data.noisy_predictions(test, 0.88, seed=1)
    gold_idx, rad_idx = [0, 3, 4], [1, 2, 5]
    truth = (test.votes[:, gold_idx].sum(axis=1) >= 2).astype(np.int8)
    raters = {"model": pred, **{f"Rad{i + 1}": test.votes[:, i] for i in rad_idx}}

    # 1. The whole process, as an organiser runs it.
    with tempfile.TemporaryDirectory() as tmp:
        gold, sub = Path(tmp) / "gold.csv", Path(tmp) / "output.csv"
        example_data.write_gold(gold, test)
        example_data.write_predictions(sub, test.studies, list(pred))
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        walls = []
        for _ in range(args.process_runs):
            start = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "mura",
                    "score",
                    str(gold),
                    str(sub),
                    "--format",
                    "json",
                    "--resamples",
                    str(args.resamples),
                ],
                check=True,
                capture_output=True,
                env=env,
            )
            walls.append(time.perf_counter() - start)
        python_start = []
        for _ in range(args.process_runs):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"], check=True)
            python_start.append(time.perf_counter() - start)

    # 2. The bootstrap on the same work: overall group, model + 3 radiologists, paired diffs.
    start = time.perf_counter()
    score_group(truth, raters, "Overall", Settings(resamples=args.resamples))
    kit = time.perf_counter() - start
    start = time.perf_counter()
    naive_bootstrap(truth, raters, args.naive_resamples, seed=0)
    naive = (time.perf_counter() - start) * args.resamples / args.naive_resamples

    print(
        f"mura score process (207 studies, 6 raters, {args.resamples:,} resamples, 8 groups): "
        f"median {statistics.median(walls):.3f} s, max {max(walls):.3f} s over {len(walls)} runs "
        f"(python -c pass: {statistics.median(python_start):.3f} s)"
    )
    scaled = args.naive_resamples != args.resamples
    note = f" (extrapolated from {args.naive_resamples:,})" if scaled else ""
    print(
        f"bootstrap, overall group, model + 3 radiologists + paired differences, "
        f"{args.resamples:,} resamples: kit {kit * 1000:.1f} ms, naive loop {naive:.1f} s{note}"
        f" -> {naive / kit:,.0f}x"
    )


if __name__ == "__main__":
    main()
