"""Benchmark `mura score --html` with probabilities (the report with its ROC curve) as a whole
process: this checkout against another one (`--before`, e.g. a worktree of main when the report
drew its ROC curve with matplotlib), interleaved in the same run, with and without `--html`.

Each round runs every (checkout, --html or not) once; the table gives medians of wall clock and
CPU time (user + system, which another session's load changes less), the page's size and
whether it holds an image. Inputs: a gold file, predictions and probabilities, e.g. the demo's
(`mura synth` test set with six radiologists, and predict.py's two outputs on it).

Run: .venv/bin/python bench/bench_report.py GOLD PREDICTIONS PROBABILITIES [--before DIR] [--rounds 9]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(checkout: Path, args: list[str]) -> tuple[float, float]:
    """`python -m mura ARGS` from `checkout` (its kit comes first on the path): (wall, CPU) seconds."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mura", *args], cwd=checkout, env=env, stdout=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        sys.exit(f"mura {' '.join(args)} failed in {checkout}")
    return wall, usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("gold", type=Path)
    parser.add_argument("predictions", type=Path)
    parser.add_argument("probabilities", type=Path)
    parser.add_argument("--before", type=Path, help="Another checkout of the kit to compare with.")
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    checkouts = {"this checkout": ROOT}
    if args.before is not None:
        checkouts["--before"] = args.before.resolve()
    score = ["score", str(args.gold.resolve()), str(args.predictions.resolve())]
    score += ["--probabilities", str(args.probabilities.resolve())]
    times: dict[tuple[str, bool], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        pages = {name: Path(tmp) / f"{i}.html" for i, name in enumerate(checkouts)}
        for _ in range(args.rounds):
            for html in (True, False):
                for name, checkout in checkouts.items():
                    extra = ["--html", str(pages[name])] if html else []
                    times.setdefault((name, html), []).append(run(checkout, score + extra))
        print("| checkout | command | wall, median (min) | CPU, median (min) | page | image in the page |")
        print("|---|---|---|---|---|---|")
        for (name, html), rows in times.items():
            walls, cpus = [r[0] for r in rows], [r[1] for r in rows]
            text = pages[name].read_text() if html else ""
            size = f"{len(text.encode()):,} B" if html else ""
            image = ("yes (PNG)" if "<img" in text else "no (inline SVG)") if html else ""
            print(
                f"| {name} | {'`--html`' if html else 'no `--html`'} | {statistics.median(walls):.2f} s "
                f"({min(walls):.2f}) | {statistics.median(cpus):.2f} s ({min(cpus):.2f}) | {size} | {image} |"
            )


if __name__ == "__main__":
    main()
