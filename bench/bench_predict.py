"""predict.py against the arithmetic limit and a naive loop, on the same generated images.

    python bench/bench_predict.py [--images 400] [--members 2] [--memory-images 100,2000]

(a) limit: the forward pass of the members alone, on ready tensors, with the fastest exact
    (fp32) backend predict.py uses (ONNX Runtime on CPU), at predict.py's batch size;
(b) naive: the loop of public MURA repositories -- a study at a time, each member re-reading
    and re-decoding the study's images, torch fp32;
(c) predict.py as the platform runs it (a fresh process; the rate it reports counts from the
    start of the run, bundle checks and session set-up included); then `--precision bf16`
    with its largest study-probability difference against fp32;
and the peak memory (max RSS) of predict.py on a short and a long input.
Members are DenseNet-169 at 224 px with random weights (speed does not depend on the weights).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_bundle(folder: Path, members: int) -> Path:
    import torch

    from reference_model.bundle import write_bundle
    from reference_model.model import build_model

    torch.manual_seed(0)
    states = [
        (f"random-{i}", build_model("densenet169", pretrained=False).state_dict(), None, None)
        for i in range(members)
    ]
    write_bundle(states, "densenet169", 224, folder / "bundle")
    return folder / "bundle"


def images_of(data: Path, count: int) -> list[str]:
    lines = (data / "MURA-v1.1" / "test_image_paths.csv").read_text().splitlines()
    return (lines * (count // len(lines) + 1))[:count]


def limit(bundle: Path, size: int, seconds: float = 20.0) -> float:
    """Images per second through the whole ensemble, forward only, on ready tensors."""
    from reference_model.bundle import read_manifest
    from reference_model.cpus import available_cpus
    from reference_model.engines import OnnxEngine

    engine = OnnxEngine(bundle / read_manifest(bundle).onnx.file, available_cpus())
    batch = np.random.default_rng(0).standard_normal((engine.batch_size, size, size, 3)).astype(np.float32)
    engine(batch)  # warm-up: the first run of a shape sets the kernels up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        engine(batch)
        done += len(batch)
    return done / (time.perf_counter() - start)


def naive(bundle: Path, data: Path, images: list[str]) -> float:
    """A study at a time; each member opens, decodes and transforms the study's images again."""
    import torch
    from PIL import Image

    from reference_model.bundle import load_bundle
    from reference_model.preprocess import transform

    models = load_bundle(bundle).models
    prep = transform(224, train=False)
    studies: dict[str, list[str]] = {}
    for image in images:
        studies.setdefault(image.rsplit("/", 1)[0], []).append(image)
    start = time.perf_counter()
    with torch.no_grad():
        for paths in studies.values():
            probs = []
            for model in models:
                x = torch.stack([prep(Image.open(data / p).convert("RGB")) for p in paths])
                probs.append(torch.sigmoid(model(x)).mean().item())
            _ = float(np.mean(probs)) > 0.5
    return len(images) / (time.perf_counter() - start)


def run_predict(
    bundle: Path, data: Path, images: list[str], out: Path, *extra: str
) -> tuple[float, float, int]:
    """(images/s reported by predict.py, wall seconds of the process, peak RSS in MiB)."""
    (out / "input.csv").write_text("\n".join(images) + "\n")
    start = time.perf_counter()
    # predict.py runs under a small launcher process: a child forked from this process would
    # inherit its peak RSS (torch and the loaded members) as its own ru_maxrss, even after exec.
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            LAUNCHER,
            sys.executable,
            str(ROOT / "submission" / "predict.py"),
            str(out / "input.csv"),
            str(out / "output.csv"),
            "--bundle",
            str(bundle),
            "--probabilities",
            str(out / "probs.csv"),
            *extra,
        ],
        cwd=data,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, stderr = proc.communicate()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"predict.py failed:\n{stderr}")
    rate = float(re.search(r"\(([\d.]+) images/s", stderr).group(1))
    peak_kib = int(re.search(r"^maxrss_kib=(\d+)$", stderr, re.MULTILINE).group(1))
    return rate, wall, peak_kib // 1024


# Runs argv[1:] and prints its peak resident memory: the launcher itself is a few MiB of Python.
LAUNCHER = (
    "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
    "print(f'maxrss_kib={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}', file=sys.stderr); "
    "sys.exit(code)"
)


def has_bf16() -> bool:
    """Whether predict.py accepts --precision bf16 here (the check it makes itself)."""
    import torch

    from reference_model.engines import cpu_has_bf16

    return cpu_has_bf16(torch)


def probabilities(path: Path) -> np.ndarray:
    return np.array([float(line.split(",")[1]) for line in path.read_text().splitlines()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--members", type=int, default=2)
    parser.add_argument("--naive-images", type=int, default=None, help="default: the same images as (c)")
    parser.add_argument("--memory-images", default="100,2000")
    args = parser.parse_args()

    from reference_model.synth import Options, generate

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "data"
        generate(data, Options(train_studies=2, valid_studies=2, test_studies=60, image_size=512, seed=5))
        bundle = make_bundle(work, args.members)
        images = images_of(data, args.images)
        print(f"{args.members} x DenseNet-169, 224 px, {len(images)} images of 512 px, {os.cpu_count()} CPUs")

        a = limit(bundle, 224)
        print(f"(a) limit, forward only (onnxruntime fp32): {a:6.1f} images/s", flush=True)
        b = naive(bundle, data, images[: args.naive_images or len(images)])
        print(f"(b) naive loop (torch fp32):                 {b:6.1f} images/s", flush=True)
        c, c_wall, _ = run_predict(bundle, data, images, work)
        print(
            f"(c) predict.py fp32:                         {c:6.1f} images/s = {c / a:.0%} of (a), "
            f"{c / b:.1f}x (b); process wall {c_wall:.1f} s",
            flush=True,
        )
        fp32 = probabilities(work / "probs.csv")
        if has_bf16():
            bf16, _, _ = run_predict(bundle, data, images, work, "--precision", "bf16")
            diff = float(np.abs(probabilities(work / "probs.csv") - fp32).max())
            print(
                f"    predict.py --precision bf16:             {bf16:6.1f} images/s = {bf16 / b:.1f}x (b); "
                f"largest study probability difference against fp32: {diff:.4f}"
            )
        else:
            print("    predict.py --precision bf16:             n/a: this CPU has no bfloat16 support")
        for count in (int(n) for n in args.memory_images.split(",")):
            rate, wall, rss = run_predict(bundle, data, images_of(data, count), work)
            print(f"peak memory, {count:5d} images: {rss:5d} MiB ({rate:.1f} images/s, {wall:.0f} s)")


if __name__ == "__main__":
    main()
