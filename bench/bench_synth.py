"""Benchmark `mura synth`: images per second at MURA's size (longest side 512).

The kit (worker processes, PNG compression level 1) against a baseline measured in the same run:
the same drawing in one process with PIL's default PNG compression (level 6), which is what a
straightforward generator does. Target: at least 200 images/s.

Run: .venv/bin/python bench/bench_synth.py [--studies 1500]
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reference_model.synth import Options, generate, plan, render  # noqa: E402


def baseline(options: Options, limit: int) -> float:
    """Images/s drawing and saving at PIL's default compression, in one process."""
    studies = plan(options)
    count, start = 0, time.perf_counter()
    for study in studies:
        for view in range(study.views):
            image, _ = render(study, view, options.image_size, options.rgb_rate)
            image.save(io.BytesIO(), format="PNG")
            count += 1
        if count >= limit:
            break
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--studies", type=int, default=1500)
    parser.add_argument("--baseline-images", type=int, default=600)
    args = parser.parse_args()
    options = Options(train_studies=args.studies, valid_studies=100, test_studies=100)
    with tempfile.TemporaryDirectory() as tmp:
        summary = generate(Path(tmp) / "tree", options)
    total = sum(summary.images.values())
    kit = total / summary.seconds
    base = baseline(options, args.baseline_images)
    print(
        f"mura synth: {total:,} images at 512 px in {summary.seconds:.1f} s = {kit:,.0f} images/s; "
        f"baseline (one process, PNG level 6): {base:,.0f} images/s -> {kit / base:.1f}x"
    )


if __name__ == "__main__":
    main()
