"""predict.py against the fastest forward pass this machine has and a naive loop, on the same
generated images, with every figure bench/README.md's "predict" table needs, in one run:

    python bench/bench_predict.py [--images 400] [--members 2] [--seconds 10]
                                  [--real-members 5 --real-images 556] [--memory-images 100,2000]
                                  [--trained BUNDLE --trained-data DATA]

- the machine: CPU model, its kind (AMX, AVX512-BF16, AVX-512, AVX2), the flags that decide,
  the CPUs this process may use, the library versions; the load average beside every figure;
- (a) the limit: the members' forward pass alone on ready tensors, for every exact (fp32)
  engine the machine has (OpenVINO f32 at a few stream and batch settings, ONNX Runtime, torch
  channels_last), each in a fresh process; (a) is the fastest. (a') the same for bf16 (OpenVINO
  bf16, torch bf16) where the CPU has bf16;
- an AVX2-only CPU, approximated on this one: OpenVINO and torch with their ISA capped at AVX2
  (OV_CPU_MAX_ISA, ONEDNN_MAX_CPU_ISA). ONNX Runtime cannot be capped: its figure here is an
  upper bound for an AVX2 CPU of the same cores;
- (b) the naive loop of public MURA repositories (a study at a time, each member re-reading
  and re-decoding the study's images; torch fp32): a baseline, not a target;
- the split of the two cores between decoding and the engine: predict's own loop
  (reference_model.infer.predict_views) with 1 or 2 decode threads and 1 or 2 OpenVINO streams;
- (c) predict.py as the platform runs it, fp32 (the automatic choice), and (c') with
  `--precision bf16`; the rate it reports counts from the start of the run (bundle checks and
  compiling included); then the largest study-probability difference bf16 - fp32;
- start-up: predict.py's whole process on a 4-image input with each engine;
- peak memory (max RSS) of predict.py on a short and a long input, fp32 and bf16;
- the real-size case: a `--real-members` ensemble on `--real-images` images (MURA's test set:
  556), predict.py end to end, fp32 and bf16;
- with --trained: a trained bundle on its data's test set (the demo's: `demo-output/...`),
  fp32 against bf16: studies whose label differs, and kappa of each against the radiologists
  (`mura score`).

Members are DenseNet-169 at 224 px with random weights (speed does not depend on the weights).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

AVX2_ONLY = {"OV_CPU_MAX_ISA": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
# OpenVINO settings the forward pass tries: (streams, images per stream). predict uses
# reference_model.engines.OpenVinoEngine's defaults; the others show they are the fastest.
OPENVINO_SETTINGS = ((2, 4), (2, 8), (1, 8), (1, 16))


def load() -> str:
    return f"load {os.getloadavg()[0]:.2f}"


def machine() -> str:
    from reference_model.cpus import available_cpus, cpu_flags, cpu_kind

    flags = cpu_flags()
    model = "unknown CPU"
    with contextlib.suppress(OSError, StopIteration):
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    shown = [f for f in ("amx_tile", "amx_bf16", "avx512_bf16", "avx512f", "avx2") if f in flags]
    versions = []
    for package in ("openvino", "onnxruntime", "torch"):
        try:
            from importlib.metadata import version

            versions.append(f"{package} {version(package)}")
        except Exception:
            versions.append(f"{package} absent")
    return (
        f"CPU: {model}, kind {cpu_kind()} (flags: {' '.join(shown) or 'none of avx2/avx512/amx'}), "
        f"{available_cpus()} CPUs usable, {platform.machine()}; {', '.join(versions)}; "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )


# --- the bundles and images ------------------------------------------------------------------


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
    """`count` distinct image paths: the generated test set, then copies of it under
    MURA-v1.1/test-2/, test-3/, ... (symlinks to test/). predict.py counts a repeated path once,
    so a list that merely repeated the lines would measure a few hundred images, not `count`."""
    lines = (data / "MURA-v1.1" / "test_image_paths.csv").read_text().splitlines()
    paths = []
    for copy in range(1, count // len(lines) + 2):
        if copy > 1 and not (data / "MURA-v1.1" / f"test-{copy}").exists():
            (data / "MURA-v1.1" / f"test-{copy}").symlink_to("test")
        prefix = "MURA-v1.1/test/" if copy == 1 else f"MURA-v1.1/test-{copy}/"
        paths += [prefix + line.removeprefix("MURA-v1.1/test/") for line in lines]
    return paths[:count]


# --- (a): the forward pass, each engine in a fresh process ----------------------------------


def child(*args: str, env: dict | None = None) -> str:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    if proc.returncode != 0:
        sys.exit(f"bench child {args[:3]} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout.strip().splitlines()[-1]


def make_engine(bundle: Path, engine: str, precision: str, settings: str = ""):
    from reference_model.bundle import read_manifest
    from reference_model.cpus import available_cpus
    from reference_model.engines import OnnxEngine, OpenVinoEngine, TorchEngine

    manifest = read_manifest(bundle)
    threads = available_cpus()
    if engine == "openvino":
        streams, per_stream = (int(x) for x in settings.split("x")) if settings else (None, None)
        extra = {} if streams is None else {"streams": streams, "per_stream": per_stream}
        return OpenVinoEngine(bundle / manifest.onnx.file, precision, threads, **extra)
    if engine == "onnx":
        return OnnxEngine(bundle / manifest.onnx.file, threads)
    return TorchEngine(bundle, manifest, "cpu", precision)


def child_forward(bundle: str, engine: str, precision: str, seconds: str, settings: str = "") -> None:
    from reference_model.bundle import read_manifest

    size = read_manifest(Path(bundle)).input_size
    start = time.perf_counter()
    runner = make_engine(Path(bundle), engine, precision, settings)
    ready = time.perf_counter() - start
    batch = np.random.default_rng(0).standard_normal((runner.batch_size, size, size, 3)).astype(np.float32)
    runner(batch)  # warm-up: the first run of a shape sets the kernels up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < float(seconds):
        runner(batch)
        done += len(batch)
    rate = done / (time.perf_counter() - start)
    print(json.dumps({"rate": rate, "batch": runner.batch_size, "ready": ready, "load": os.getloadavg()[0]}))


# --- (b): the naive loop ------------------------------------------------------------------------


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


# --- the split: decode threads x engine streams, predict's own loop -----------------------------


def child_split(bundle: str, data: str, count: str, precision: str, settings: str, decoders: str) -> None:
    """predict's loop (reference_model.infer.predict_views) over `count` images with `decoders`
    decode threads and OpenVINO at `settings` (streams x images per stream)."""
    from reference_model import infer
    from reference_model.bundle import read_manifest
    from reference_model.inputs import group_studies

    manifest = read_manifest(Path(bundle))
    engine = make_engine(Path(bundle), "openvino", precision, settings)
    os.chdir(data)
    images, studies = group_studies(images_of(Path(data), int(count)), lambda w: None)
    start = time.perf_counter()
    infer.predict_views(
        engine, manifest, images, studies, engine.batch_size, int(decoders), infer._NoBar(), print
    )
    rate = len(images) / (time.perf_counter() - start)
    print(json.dumps({"rate": rate, "load": os.getloadavg()[0]}))


# --- (c): predict.py as a whole process ---------------------------------------------------------


def run_predict(bundle: Path, data: Path, images: list[str], out: Path, *extra: str) -> dict:
    """predict.py's reported images/s and summary, the process's wall seconds and peak RSS (MiB)."""
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
        sys.exit(f"predict.py {' '.join(extra)} failed:\n{stderr}")
    summary = re.search(r"^predicted .*$", stderr, re.MULTILINE).group(0)
    if f" from {len(images)} images " not in summary:  # repeats count once: the rate would lie
        sys.exit(f"predict.py did not predict the {len(images)} images given: {summary}")
    return {
        "rate": float(re.search(r"\(([\d.]+) images/s", summary).group(1)),
        "engine": re.search(r"images/s, ([^;]*)\);", summary).group(1),
        "wall": wall,
        "rss": int(re.search(r"^maxrss_kib=(\d+)$", stderr, re.MULTILINE).group(1)) // 1024,
        "load": os.getloadavg()[0],
    }


# Runs argv[1:] and prints its peak resident memory: the launcher itself is a few MiB of Python.
LAUNCHER = (
    "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
    "print(f'maxrss_kib={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}', file=sys.stderr); "
    "sys.exit(code)"
)


def probabilities(path: Path) -> dict[str, float]:
    return {s: float(p) for s, p in (line.rsplit(",", 1) for line in path.read_text().splitlines())}


def labels(path: Path) -> dict[str, str]:
    return dict(line.rsplit(",", 1) for line in path.read_text().splitlines())


def has_bf16() -> bool:
    """Whether predict.py accepts --precision bf16 here: OpenVINO's check, else torch's."""
    from reference_model.cpus import cpu_has_native_bf16

    if cpu_has_native_bf16():
        return True
    import torch

    from reference_model.engines import cpu_has_bf16

    return cpu_has_bf16(torch)


# --- with --trained: bf16's effect on a trained bundle's answer ----------------------------------


def kappa(gold: Path, predictions: Path) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "mura", "score", str(gold), str(predictions), "--format", "json"],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        sys.exit(f"mura score failed:\n{proc.stderr}")
    result = json.loads(proc.stdout)
    return f"{result['Overall_Mean']:.3f} [{result['Overall_Lower']:.3f}, {result['Overall_Upper']:.3f}]"


def trained(bundle: Path, data: Path, out: Path) -> None:
    images = (data / "MURA-v1.1" / "test_image_paths.csv").read_text().splitlines()
    gold = data / "MURA-v1.1" / "test_radiologists.csv"
    answers = {}
    for precision in ("fp32", "bf16"):
        folder = out / f"trained-{precision}"
        folder.mkdir()
        run = run_predict(bundle, data, images, folder, "--precision", precision)
        answers[precision] = (labels(folder / "output.csv"), probabilities(folder / "probs.csv"), run)
        print(
            f"trained bundle, {precision}: {run['rate']:.1f} images/s ({run['engine']}); "
            f"kappa {kappa(gold, folder / 'output.csv')}; {load()}",
            flush=True,
        )
    (fp32, p32, _), (bf16, p16, _) = answers["fp32"], answers["bf16"]
    differ = [s for s in fp32 if fp32[s] != bf16[s]]
    largest = max(abs(p32[s] - p16[s]) for s in p32)
    print(
        f"trained bundle: {len(differ)} of {len(fp32)} studies labelled differently by bf16 and fp32 "
        f"({', '.join(differ[:5])}); largest study-probability difference {largest:.4f}",
        flush=True,
    )


# --- the run ----------------------------------------------------------------------------------


def best_forward(bundle: Path, precision: str, seconds: float, env: dict | None = None) -> tuple[float, str]:
    """Every engine's forward pass at `precision` (printed); the fastest (rate, what)."""
    from reference_model.cpus import cpu_has_native_bf16

    runs = []
    if precision == "fp32" or cpu_has_native_bf16():
        for settings in OPENVINO_SETTINGS:
            runs.append(("openvino", settings))
    if precision == "fp32":
        runs.append(("onnx", None))
    runs.append(("torch", None))
    best = (0.0, "")
    for engine, settings in runs:
        shown = f"{engine} {precision}" + (
            f", {settings[0]} streams x {settings[1]} images" if settings else ""
        )
        text = "x".join(map(str, settings)) if settings else ""
        result = json.loads(child("forward", str(bundle), engine, precision, str(seconds), text, env=env))
        print(
            f"    {shown:40s} {result['rate']:6.1f} images/s (batch {result['batch']}, ready in "
            f"{result['ready']:.1f} s; load {result['load']:.2f})",
            flush=True,
        )
        best = max(best, (result["rate"], shown))
    return best


def limits(bundle: Path, seconds: float, bf16: bool) -> tuple[float, float | None]:
    """(a) and (a'), every engine printed; then the AVX2 approximation."""
    print("(a) forward pass only, ready tensors, fp32:", flush=True)
    a, a_what = best_forward(bundle, "fp32", seconds)
    print(f"(a) limit, fp32: {a:.1f} images/s ({a_what})", flush=True)
    a16 = None
    if bf16:
        print("(a') forward pass only, bf16:", flush=True)
        a16, a16_what = best_forward(bundle, "bf16", seconds)
        print(f"(a') limit, bf16: {a16:.1f} images/s ({a16_what})", flush=True)
    print("an AVX2-only CPU, approximated here (OV_CPU_MAX_ISA=AVX2 ONEDNN_MAX_CPU_ISA=AVX2), fp32:")
    best_forward(bundle, "fp32", seconds, env=AVX2_ONLY)
    return a, a16


def split(bundle: Path, data: Path, count: int, precisions: tuple[str, ...]) -> None:
    print("split of the cores: predict's loop, decode threads x OpenVINO streams (x images each):")
    for precision in precisions:
        for settings in ("1x8", "2x4"):
            for decoders in ("1", "2"):
                args = ("split", str(bundle), str(data), str(count), precision, settings, decoders)
                result = json.loads(child(*args))
                print(
                    f"    {precision}, {decoders} decode threads, {settings.replace('x', ' streams x ')} "
                    f"images: {result['rate']:6.1f} images/s (load {result['load']:.2f})",
                    flush=True,
                )


def whole_process(
    bundle: Path, data: Path, images: list[str], work: Path, a: float, a16: float | None, b: float
) -> None:
    """(c), the former default (ONNX Runtime) beside it, and (c') where the CPU has bf16."""
    c = run_predict(bundle, data, images, work)
    print(
        f"(c) predict.py fp32: {c['rate']:.1f} images/s = {c['rate'] / a:.0%} of (a), {c['rate'] / b:.1f}x "
        f"(b) ({c['engine']}); process wall {c['wall']:.1f} s; load {c['load']:.2f}",
        flush=True,
    )
    fp32 = probabilities(work / "probs.csv")
    onnx = run_predict(bundle, data, images, work, "--backend", "onnx")
    print(
        f"    predict.py fp32 --backend onnx (the default before): {onnx['rate']:.1f} images/s = "
        f"{onnx['rate'] / a:.0%} of (a); load {onnx['load']:.2f}",
        flush=True,
    )
    if a16 is None:
        print("(c') predict.py --precision bf16: n/a: this CPU has no bfloat16 support")
        return
    c16 = run_predict(bundle, data, images, work, "--precision", "bf16")
    diff = max(abs(p - fp32[s]) for s, p in probabilities(work / "probs.csv").items())
    print(
        f"(c') predict.py --precision bf16: {c16['rate']:.1f} images/s = {c16['rate'] / a16:.0%} of (a'), "
        f"{c16['rate'] / b:.1f}x (b) ({c16['engine']}); largest study-probability difference "
        f"against fp32: {diff:.4f}; load {c16['load']:.2f}",
        flush=True,
    )


def start_up_and_memory(
    bundle: Path, data: Path, work: Path, counts: list[int], precisions: tuple[str, ...]
) -> None:
    from reference_model.cpus import cpu_has_native_bf16

    print("start-up: predict.py's whole process on 4 images (2 studies):")
    starts = [("fp32", "openvino"), ("fp32", "onnx"), ("fp32", "torch")]
    starts += [("bf16", "openvino")] if cpu_has_native_bf16() else []
    starts += [("bf16", "torch")] if "bf16" in precisions else []
    for precision, engine in starts:
        run = run_predict(
            bundle, data, images_of(data, 4), work, "--backend", engine, "--precision", precision
        )
        print(f"    {engine} {precision}: {run['wall']:.1f} s ({load()})", flush=True)
    for precision in precisions:
        for count in counts:
            run = run_predict(bundle, data, images_of(data, count), work, "--precision", precision)
            print(
                f"peak memory, {precision}, {count:5d} images: {run['rss']:5d} MiB "
                f"({run['rate']:.1f} images/s, {run['wall']:.0f} s; load {run['load']:.2f})",
                flush=True,
            )


def real_size(data: Path, work: Path, members: int, count: int, precisions: tuple[str, ...]) -> None:
    folder = work / "real"
    folder.mkdir()
    real = make_bundle(folder, members)
    images = images_of(data, count)
    for precision in precisions:
        run = run_predict(real, data, images, work, "--precision", precision)
        print(
            f"real size: {members} x DenseNet-169, {len(images)} images, {precision}: "
            f"{run['wall']:.1f} s end to end ({run['rate']:.1f} images/s, {run['engine']}; "
            f"{run['rss']} MiB; load {run['load']:.2f})",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--members", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0, help="per forward-pass measurement")
    parser.add_argument("--naive-images", type=int, default=None, help="default: the same images as (c)")
    parser.add_argument("--memory-images", default="100,2000")
    parser.add_argument("--real-members", type=int, default=5)
    parser.add_argument("--real-images", type=int, default=556)
    parser.add_argument("--trained", type=Path, default=None, help="a trained bundle (the demo's)")
    parser.add_argument("--trained-data", type=Path, default=None, help="the folder holding its MURA-v1.1/")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        {"forward": child_forward, "split": child_split}[args.child[0]](*args.child[1:])
        return
    if (args.trained is None) != (args.trained_data is None):
        parser.error("--trained and --trained-data go together")

    from reference_model.synth import Options, generate

    print(machine(), flush=True)
    precisions = ("fp32", "bf16") if has_bf16() else ("fp32",)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "data"
        generate(data, Options(train_studies=2, valid_studies=2, test_studies=60, image_size=512, seed=5))
        bundle = make_bundle(work, args.members)
        images = images_of(data, args.images)
        print(f"{args.members} x DenseNet-169, 224 px, {len(images)} images of 512 px", flush=True)
        a, a16 = limits(bundle, args.seconds, "bf16" in precisions)
        b = naive(bundle, data, images[: args.naive_images or len(images)])
        print(f"(b) naive loop (torch fp32): {b:.1f} images/s; {load()}", flush=True)
        split(bundle, data, len(images), precisions)
        whole_process(bundle, data, images, work, a, a16, b)
        start_up_and_memory(bundle, data, work, [int(n) for n in args.memory_images.split(",")], precisions)
        real_size(data, work, args.real_members, args.real_images, precisions)
        if args.trained is not None:
            trained(args.trained.resolve(), args.trained_data.resolve(), work)
    print(f"done; {load()}")


if __name__ == "__main__":
    main()
