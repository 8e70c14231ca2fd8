"""submission/predict.py and reference_model.infer: the contract, robustness, exactness."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from bundle_helpers import edit_manifest
from PIL import Image

from reference_model.bundle import read_manifest, write_manifest
from reference_model.errors import PredictError
from reference_model.infer import predict
from reference_model.inputs import read_input
from scorer.files import file_sha256
from scorer.formats import PROBABILITIES, read_predictions

ROOT = Path(__file__).resolve().parents[1]
PREDICT = ROOT / "submission" / "predict.py"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
ENV.pop("MURA_BUNDLE", None)
ENV.pop("MURA_PROBABILITIES", None)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A small generated test split: the folder that holds MURA-v1.1/."""
    from reference_model.synth import Options, generate

    root = tmp_path_factory.mktemp("predict-data")
    generate(
        root, Options(train_studies=2, valid_studies=2, test_studies=24, image_size=48, seed=3), workers=1
    )
    return root


@pytest.fixture(scope="module")
def bundle(data, tmp_path_factory) -> Path:
    """Two randomly initialised DenseNet-121 members at 32 px, with their ONNX export, and a
    threshold between the two middle study probabilities of the test split: random heads put
    every study near the same probability, so at 0.5 all studies could get the same label."""
    import dataclasses

    import torch

    from reference_model.bundle import write_bundle
    from reference_model.model import build_model

    torch.manual_seed(0)
    members = [
        (f"random-{i}", build_model("densenet121", pretrained=False).state_dict(), None, None)
        for i in range(2)
    ]
    root = tmp_path_factory.mktemp("predict-bundle")
    out = root / "bundle"
    write_bundle(members, "densenet121", 32, out)
    (root / "input.csv").write_text("\n".join(image_lines(data)) + "\n")
    cwd = os.getcwd()
    os.chdir(data)
    try:
        predict(root / "input.csv", root / "o.csv", out, probabilities=root / "p.csv", progress=False)
    finally:
        os.chdir(cwd)
    probs = sorted(float(p) for _, p in rows(root / "p.csv"))
    middle = len(probs) // 2
    write_manifest(
        out, dataclasses.replace(read_manifest(out), threshold=(probs[middle - 1] + probs[middle]) / 2)
    )
    return out


def image_lines(data: Path) -> list[str]:
    return (data / "MURA-v1.1" / "test_image_paths.csv").read_text().splitlines()


def run(args: list, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(PREDICT), *map(str, args)],
        cwd=cwd,
        env=env or ENV,
        capture_output=True,
        text=True,
    )


def rows(path: Path) -> list[tuple[str, str]]:
    return [tuple(line.split(",")) for line in path.read_text().splitlines()]


def expected_studies(lines: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for line in lines:
        seen.setdefault(line.strip().rsplit("/", 1)[0] + "/", None)
    return list(seen)


@pytest.fixture(scope="module")
def reference(data, bundle, tmp_path_factory) -> dict[str, float]:
    """Each study's probability from a clean input, in-process."""
    out = tmp_path_factory.mktemp("reference")
    inp = out / "input.csv"
    inp.write_text("\n".join(image_lines(data)) + "\n")
    cwd = os.getcwd()
    os.chdir(data)
    try:
        predict(inp, out / "o.csv", bundle, probabilities=out / "p.csv", progress=False)
    finally:
        os.chdir(cwd)
    return {s: float(p) for s, p in rows(out / "p.csv")}


def test_the_contract_format_order_and_probabilities(data, bundle, reference, tmp_path):
    lines = image_lines(data)
    # Interleave studies: the output follows the order in which studies first appear.
    shuffled = lines[1::2] + lines[0::2]
    (tmp_path / "input.csv").write_text("\n".join(shuffled) + "\n")
    proc = run(
        [
            tmp_path / "input.csv",
            tmp_path / "output.csv",
            "--bundle",
            bundle,
            "--probabilities",
            tmp_path / "probs.csv",
        ],
        cwd=data,
    )
    assert proc.returncode == 0, proc.stderr
    out = rows(tmp_path / "output.csv")
    assert [s for s, _ in out] == expected_studies(shuffled)
    assert all(s.endswith("/") and label in ("0", "1") for s, label in out)
    assert {label for _, label in out} == {"0", "1"}  # the fixture's threshold splits the studies
    assert not (tmp_path / "output.csv").read_text().startswith("study")  # no header
    probs = dict(rows(tmp_path / "probs.csv"))
    assert list(probs) == [s for s, _ in out]
    threshold = read_manifest(bundle).threshold
    for study, label in out:
        assert int(label) == int(float(probs[study]) > threshold)
        assert float(probs[study]) == pytest.approx(reference[study], abs=1e-6)
    assert "predicted 24 studies from" in proc.stderr and "images/s" in proc.stderr


def run_probed(args: list, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """predict.py with `args`, reporting on stderr its exit code and whether torch was imported."""
    probe = (
        "import runpy, sys\n"
        "predict, sys.argv = sys.argv[1], ['predict.py', *sys.argv[2:]]\n"
        "try:\n    runpy.run_path(predict, run_name='__main__')\n"
        "except SystemExit as stop:\n    print('EXIT', stop.code, file=sys.stderr)\n"
        "print('LOADED', sorted({'torch', 'torchvision'} & set(sys.modules)), file=sys.stderr)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", probe, str(PREDICT), *map(str, args)],
        cwd=cwd,
        env=env or ENV,
        capture_output=True,
        text=True,
    )


def without_openvino(tmp_path: Path) -> dict:
    """predict.py's environment with an `openvino` that fails to import, as a broken install does."""
    fake = tmp_path / "broken-openvino"
    (fake / "openvino").mkdir(parents=True)
    (fake / "openvino" / "__init__.py").write_text(
        "raise ImportError('libopenvino.so: cannot open shared object')\n"
    )
    return {**ENV, "PYTHONPATH": f"{fake}{os.pathsep}{ENV['PYTHONPATH']}"}


@pytest.mark.skipif(any(Path("/dev").glob("nvidia[0-9]*")), reason="a GPU: predict asks torch about CUDA")
def test_the_default_cpu_engine_is_chosen_for_the_cpu_and_never_imports_torch(data, bundle, tmp_path):
    """predict.py runs `mura predict`'s command (reference_model.cli), which imports its work
    when it runs: the default CPU engines, OpenVINO and ONNX Runtime (in the order the CPU's
    kind decides), are spared torch's import (seconds); with one of them broken the other runs.
    The summary line says which engine ran and that it was chosen for this CPU."""
    from reference_model.cpus import cpu_kind
    from reference_model.engines import auto_order

    (tmp_path / "input.csv").write_text("\n".join(image_lines(data)) + "\n")
    args = [tmp_path / "input.csv", tmp_path / "o.csv", "--bundle", bundle]
    chosen = f"chosen for this {cpu_kind()} CPU)"
    first = ENGINE_NAMES[auto_order("fp32")[0]]
    proc = run_probed(args, cwd=data)
    assert f"images/s, {first}, {chosen}" in proc.stderr and "LOADED []" in proc.stderr, proc.stderr
    proc = run_probed(args, cwd=data, env=without_openvino(tmp_path))
    assert f"images/s, onnxruntime fp32, {chosen}" in proc.stderr and "LOADED []" in proc.stderr, proc.stderr
    for backend in ("onnx", "openvino"):  # asked for: no "chosen"
        proc = run_probed([*args, "--backend", backend], cwd=data)
        assert f"images/s, {ENGINE_NAMES[backend]});" in proc.stderr and "LOADED []" in proc.stderr, (
            proc.stderr
        )


def test_messy_input_gives_the_same_answer(data, bundle, reference, tmp_path):
    lines = image_lines(data)
    messy = ["image_path"] + [
        (f"  {data / line}  " if i % 3 == 0 else f" {line}") + ("\r" if i % 2 else "")
        for i, line in enumerate(lines)
    ]
    messy.insert(5, "")
    messy.insert(9, "   \r")
    (tmp_path / "input.csv").write_text("\n".join(messy) + "\n\n")
    proc = run(
        [
            tmp_path / "input.csv",
            tmp_path / "output.csv",
            "--bundle",
            bundle,
            "--probabilities",
            tmp_path / "probs.csv",
        ],
        cwd=data,
    )
    assert proc.returncode == 0, proc.stderr
    probs = {s: float(p) for s, p in rows(tmp_path / "probs.csv")}
    # Absolute paths under the working directory come out in the contract's relative form.
    assert list(probs) == list(reference)
    assert max(abs(probs[s] - reference[s]) for s in probs) < 1e-6


def _bomb(path: Path) -> None:
    """A PNG whose header claims 30000 x 30000 pixels (one tiny IDAT): a decompression bomb."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def test_bad_images_are_warnings_and_every_study_gets_a_row(data, bundle, reference, tmp_path):
    work = tmp_path / "data"
    shutil.copytree(data / "MURA-v1.1", work / "MURA-v1.1")
    lines = image_lines(data)
    by_study: dict[str, list[str]] = {}
    for line in lines:
        by_study.setdefault(line.rsplit("/", 1)[0] + "/", []).append(line)
    multi = [s for s, imgs in by_study.items() if len(imgs) >= 2]
    assert len(multi) >= 10, "the generated split needs studies with several views"
    broken = {}
    # One bad view in each of six multi-view studies: the study is predicted from the others.
    for kind, study in zip(["missing", "empty", "truncated", "bomb", "text", "folder"], multi):
        path = work / by_study[study][0]
        if kind == "missing":
            path.unlink()
        elif kind == "empty":
            path.write_bytes(b"")
        elif kind == "truncated":
            path.write_bytes(path.read_bytes()[:60])
        elif kind == "bomb":
            _bomb(path)
        elif kind == "text":
            path.write_text("not an image")
        else:
            path.unlink()
            path.mkdir()
        broken[study] = kind
    # Valid images in unusual modes are read, not rejected.
    odd = multi[6:9]
    for mode, study in zip(["I;16", "RGBA", "P"], odd):
        path = work / by_study[study][0]
        grey = Image.open(path).convert("L")
        if mode == "I;16":
            Image.fromarray(np.asarray(grey, dtype=np.uint16) * 257).save(path)
        else:
            grey.convert(mode).save(path)
        assert Image.open(path).mode == mode
    # A study whose every view is unreadable gets the documented fallback.
    dead = multi[9]
    for image in by_study[dead]:
        (work / image).write_bytes(b"\x89PNG\r\n\x1a\n garbage")

    (tmp_path / "input.csv").write_text("\n".join(lines) + "\n")
    proc = run(
        [
            tmp_path / "input.csv",
            tmp_path / "output.csv",
            "--bundle",
            bundle,
            "--probabilities",
            tmp_path / "probs.csv",
        ],
        cwd=work,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    out = dict(rows(tmp_path / "output.csv"))
    probs = {s: float(p) for s, p in rows(tmp_path / "probs.csv")}
    assert list(out) == list(by_study)  # every study, exactly one row each
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    dead_views = len(by_study[dead])
    assert len(warnings) == len(broken) + dead_views + 1  # bad views, the dead study's and its fallback
    for study in broken:
        assert any(study in w and "predicted from its other views" in w for w in warnings), study
        assert probs[study] != reference[study]  # one view fewer
    assert "far larger than a radiograph" in proc.stderr
    assert out[dead] == "0" and probs[dead] == 0.0
    assert any(dead in w and "fallback" in w for w in warnings)
    for study in odd:
        assert not any(study in w for w in warnings)
    assert f"{len(broken) + dead_views} unreadable images, 1 study given the fallback" in proc.stderr


@pytest.mark.parametrize(
    "case, message",
    [
        ("no input", "does not exist"),
        ("empty input", "is empty"),
        ("binary input", "NUL bytes"),
        ("no bundle", "does not exist or is not a folder"),
        ("bad manifest", "not valid JSON"),
        ("changed member", "does not match its sha256"),
        ("changed onnx", "does not match its sha256"),
        # A hand-edited manifest: ONNX Runtime used to fail on the first batch, torch to run at
        # the wrong size without a word.
        ("edited input size", "the manifest was edited after `mura bundle` wrote it"),
        ("edited input size, torch", "the manifest was edited after `mura bundle` wrote it"),
        ("onnx of another input size", "takes images of 32x32 pixels, but manifest.json says input_size 64"),
        ("onnx of another member count", "returns 2 probabilities per image"),
        ("corrupt onnx, matching sha", "cannot be loaded by OpenVINO"),
        ("corrupt onnx, matching sha, onnx runtime", "cannot be loaded by ONNX Runtime"),
        # Forcing an engine this machine lacks: a broken install, ONNX Runtime in bf16, and
        # OpenVINO bf16 where OpenVINO may not use bf16 (its own ISA cap, or a CPU without bf16).
        ("openvino not importable", "--backend openvino cannot be used: openvino cannot be imported ("),
        ("onnx runtime in bf16", "--backend onnx cannot be used: ONNX Runtime runs fp32 only"),
        ("openvino bf16 capped at AVX2", "; use --precision fp32"),
        ("device typo", "--device 'banana' is not a device"),
        ("device cuda without a gpu", "no GPU is available here"),
        ("output in /proc", "cannot write output file /proc/out.csv"),
        ("probabilities in /proc", "cannot write probabilities file /proc/p.csv"),
        ("output is a folder", "is a folder; expected a file path"),
        ("output under a file", "is a file, not a folder"),
    ],
)
def test_unusable_input_bundle_option_or_output_is_exit_2_and_no_output(
    data, bundle, tmp_path, case, message
):
    import torch

    if case == "device cuda without a gpu" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    inp = tmp_path / "input.csv"
    inp.write_text("\n".join(image_lines(data)[:5]) + "\n")
    b = tmp_path / "bundle"
    shutil.copytree(bundle, b)
    out, extra, env = tmp_path / "output.csv", [], None
    if case == "no input":
        inp.unlink()
    elif case == "empty input":
        inp.write_text("\n\n")
    elif case == "binary input":
        inp.write_bytes(b"\x00\x01\x02")
    elif case == "no bundle":
        shutil.rmtree(b)
    elif case == "bad manifest":
        (b / "manifest.json").write_text("{broken")
    elif case == "changed member":
        with (b / "member-1.pt").open("ab") as f:
            f.write(b"x")
    elif case == "changed onnx":
        with (b / "ensemble.onnx").open("ab") as f:
            f.write(b"x")
    elif case.startswith("edited input size"):
        edit_manifest(b, lambda m: m.update(input_size=64), reseal=False)
        extra = ["--backend", "torch"] if case.endswith("torch") else []
    elif case == "onnx of another input size":  # a consistent manifest that does not fit the graph
        edit_manifest(b, lambda m: m.update(input_size=64))
    elif case == "onnx of another member count":
        edit_manifest(b, lambda m: m.update(members=m["members"][:1]))
    elif case.startswith("corrupt onnx, matching sha"):
        (b / "ensemble.onnx").write_bytes(b"\x08\x07 not a protobuf" * 100)
        edit_manifest(b, lambda m: m["onnx"].update(sha256=file_sha256(b / "ensemble.onnx")))
        extra = ["--backend", "onnx"] if case.endswith("onnx runtime") else []
    elif case == "openvino not importable":
        extra, env = ["--backend", "openvino"], without_openvino(tmp_path)
    elif case == "onnx runtime in bf16":
        extra = ["--backend", "onnx", "--precision", "bf16"]
    elif case == "openvino bf16 capped at AVX2":
        extra, env = ["--backend", "openvino", "--precision", "bf16"], {**ENV, "OV_CPU_MAX_ISA": "AVX2"}
    elif case == "device typo":
        extra = ["--device", "banana"]
    elif case == "device cuda without a gpu":
        extra = ["--device", "cuda"]
    elif case == "output in /proc":
        out = Path("/proc/out.csv")
    elif case == "probabilities in /proc":
        extra = ["--probabilities", "/proc/p.csv"]  # output.csv alone would be half the answer
    elif case == "output is a folder":
        out.mkdir()
    else:
        (tmp_path / "file").write_text("")
        out = tmp_path / "file" / "output.csv"
    proc = run([inp, out, "--bundle", b, *extra], cwd=data, env=env)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1  # one line
    assert not out.is_file() and not (tmp_path / "output.csv").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_a_killed_run_leaves_no_output_and_an_old_output_survives_a_failure(data, bundle, tmp_path):
    # A named pipe among the images: the run blocks when it opens it, after decoding the images
    # before it. Once the test's end of the pipe opens, the run is certainly mid-run: no sleep.
    lines = image_lines(data)
    pipe = tmp_path / "MURA-v1.1/test/XR_HAND/patient99999/study1_negative/image1.png"
    pipe.parent.mkdir(parents=True)
    os.mkfifo(pipe)
    (tmp_path / "input.csv").write_text("\n".join([*lines[:40], str(pipe), *lines[40:]]) + "\n")
    out, probs = tmp_path / "output.csv", tmp_path / "probs.csv"
    args = [str(tmp_path / "input.csv"), str(out), "--bundle", str(bundle), "--probabilities", str(probs)]
    proc = subprocess.Popen([sys.executable, str(PREDICT), *args], cwd=data, env=ENV, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300  # a bound for a run that never reaches the pipe, not a timing
    try:
        while True:
            try:
                writer = os.open(pipe, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO until the run opens it
                break
            except OSError as exc:
                if exc.errno != errno.ENXIO:
                    raise
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the run never reached the named pipe"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        os.close(writer)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists() and not probs.exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
    # A failing run leaves an earlier output.csv as it was.
    out.write_text("earlier answer\n")
    proc = run([tmp_path / "input.csv", out, "--bundle", tmp_path / "nothing-here"], cwd=data)
    assert proc.returncode == 2 and out.read_text() == "earlier answer\n"


def test_a_comma_header_and_trailing_commas_give_the_same_answer_with_one_warning(
    data, bundle, reference, tmp_path
):
    lines = image_lines(data)
    text = "image_path,label\n" + "".join(
        f"{line},\n" if i % 2 else f"{line}\n" for i, line in enumerate(lines)
    )
    (tmp_path / "input.csv").write_text(text)
    args = [
        tmp_path / "input.csv",
        tmp_path / "output.csv",
        "--bundle",
        bundle,
        "--probabilities",
        tmp_path / "p.csv",
    ]
    proc = run(args, cwd=data)
    assert proc.returncode == 0, proc.stderr
    probs = {s: float(p) for s, p in rows(tmp_path / "p.csv")}
    assert list(probs) == list(reference)
    assert max(abs(probs[s] - reference[s]) for s in probs) < 1e-6
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert (
        len(warnings) == 1 and f"{len(lines) // 2} lines end in empty comma-separated fields" in warnings[0]
    )


def test_absolute_paths_under_a_symlinked_working_directory_come_out_relative(data, tmp_path, monkeypatch):
    lines = image_lines(data)[:3]
    link = tmp_path / "link"
    link.symlink_to(data)  # the working directory reached through a symlink
    inp = tmp_path / "input.csv"
    inp.write_text("".join(f"{link}/{line}\n" for line in lines))
    monkeypatch.chdir(link)  # os.getcwd() is now the resolved path, `data`
    warned: list[str] = []
    for pwd in (str(link), None):  # the shell's $PWD through the link; without it the real paths decide
        if pwd is None:
            monkeypatch.delenv("PWD", raising=False)
        else:
            monkeypatch.setenv("PWD", pwd)
        images, studies = read_input(inp, warn=warned.append)
        assert images == lines and warned == []
    # MURA-v1.1 itself a symlink to elsewhere: only $PWD's spelling shows the path lies under it.
    work, alias = tmp_path / "work", tmp_path / "alias"
    work.mkdir()
    (work / "MURA-v1.1").symlink_to(data / "MURA-v1.1")
    alias.symlink_to(work)
    inp.write_text("".join(f"{alias}/{line}\n" for line in lines))
    monkeypatch.chdir(alias)
    monkeypatch.setenv("PWD", str(alias))
    assert read_input(inp, warn=warned.append)[0] == lines and warned == []
    # A path outside the working directory stays absolute, with one warning for all of them.
    inp.write_text("/elsewhere/XR_HAND/p1/s1/image1.png\n/elsewhere/XR_HAND/p1/s2/image1.png\n")
    images, studies = read_input(inp, warn=warned.append)
    assert [s.key for s in studies] == ["/elsewhere/XR_HAND/p1/s1/", "/elsewhere/XR_HAND/p1/s2/"]
    assert len(warned) == 1 and "2 absolute image paths are not under the working directory" in warned[0]


ENGINE_NAMES = {"openvino": "openvino fp32", "onnx": "onnxruntime fp32", "torch": "torch cpu fp32"}


def test_every_fp32_engine_gives_torchs_probabilities_batched_or_one_image_at_a_time(
    data, bundle, tmp_path, monkeypatch
):
    """OpenVINO (a batch split over its streams: 8 as 4 + 4, 7 as 4 + 3, 1 alone), ONNX Runtime
    and torch, exact: within 1e-5 of torch fp32 for every study."""
    monkeypatch.chdir(data)
    inp = tmp_path / "input.csv"
    inp.write_text("\n".join(image_lines(data)) + "\n")
    results = {}
    for backend, batch in (
        ("torch", 7),
        ("torch", 1),
        ("openvino", 8),
        ("openvino", 7),
        ("openvino", 1),
        ("onnx", 16),
        ("onnx", 1),
    ):
        probs = tmp_path / f"{backend}-{batch}.csv"
        summary = predict(
            inp,
            tmp_path / "o.csv",
            bundle,
            probabilities=probs,
            backend=backend,
            batch_size=batch,
            progress=False,
        )
        assert summary.backend == ENGINE_NAMES[backend]
        results[(backend, batch)] = np.array([float(p) for _, p in rows(probs)])
    torch_fp32 = results[("torch", 7)]
    for key, values in results.items():
        assert np.abs(values - torch_fp32).max() <= 1e-5, key


def test_tta_hflip_averages_each_view_with_its_mirror_image(data, bundle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = image_lines(data)[0]
    image = Image.open(data / line)
    for name, picture in (("plain", image), ("mirror", image.transpose(Image.Transpose.FLIP_LEFT_RIGHT))):
        folder = tmp_path / f"MURA-v1.1/test/XR_HAND/patient1/study_{name}"
        folder.mkdir(parents=True)
        picture.save(folder / "image1.png")
    (tmp_path / "input.csv").write_text(
        "MURA-v1.1/test/XR_HAND/patient1/study_plain/image1.png\nMURA-v1.1/test/XR_HAND/patient1/study_mirror/image1.png\n"
    )
    predict("input.csv", "o.csv", bundle, probabilities="p.csv", progress=False)
    plain, mirror = (float(p) for _, p in rows(tmp_path / "p.csv"))
    tta = tmp_path / "tta"
    shutil.copytree(bundle, tta)
    edit_manifest(tta, lambda m: m.update(tta_hflip=True))
    predict("input.csv", "o.csv", tta, probabilities="p.csv", progress=False)
    both, _ = (float(p) for _, p in rows(tmp_path / "p.csv"))
    assert plain != mirror
    assert both == pytest.approx((plain + mirror) / 2, abs=2e-6)


def test_runs_from_another_directory_with_the_default_or_an_overridden_bundle(
    data, bundle, reference, tmp_path
):
    submission = tmp_path / "submission"
    submission.mkdir()
    shutil.copy(PREDICT, submission / "predict.py")
    shutil.copytree(bundle, submission / "bundle")
    inp = tmp_path / "input.csv"
    inp.write_text("\n".join(image_lines(data)) + "\n")
    threshold = read_manifest(bundle).threshold
    expected = [(s, str(int(p > threshold))) for s, p in reference.items()]
    # The default bundle is the one beside predict.py, wherever the working directory is.
    proc = subprocess.run(
        [sys.executable, str(submission / "predict.py"), str(inp), "out1.csv"],
        cwd=data,
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert rows(data / "out1.csv") == expected
    (data / "out1.csv").unlink()
    # MURA_BUNDLE and MURA_PROBABILITIES override the defaults; so does --bundle.
    env = {**ENV, "MURA_BUNDLE": str(bundle), "MURA_PROBABILITIES": str(tmp_path / "p.csv")}
    shutil.rmtree(submission / "bundle")
    proc = run([inp, tmp_path / "out2.csv"], cwd=data, env=env)
    assert proc.returncode == 0, proc.stderr
    assert rows(tmp_path / "out2.csv") == expected and (tmp_path / "p.csv").is_file()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mura",
            "predict",
            str(inp),
            str(tmp_path / "out3.csv"),
            "--bundle",
            str(bundle),
        ],
        cwd=data,
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert rows(tmp_path / "out3.csv") == expected


def has_bf16(backend: str) -> bool:
    """Whether this CPU runs `backend` in bf16 (the checks predict makes itself)."""
    if backend == "openvino":
        from reference_model.cpus import cpu_has_native_bf16

        return cpu_has_native_bf16()
    import torch

    from reference_model.engines import cpu_has_bf16

    return cpu_has_bf16(torch)


@pytest.mark.parametrize("backend", ["auto", "openvino", "torch"])
def test_bf16_stays_within_5e_3_of_torch_fp32(data, bundle, tmp_path, monkeypatch, backend):
    """`--precision bf16` on OpenVINO (by default, where the CPU has AMX or AVX512-BF16) or
    torch: each study's probability within 5e-3 of torch fp32's, and not equal to it (bf16 ran)."""
    if not has_bf16("openvino" if backend == "auto" else backend):
        pytest.skip("this CPU has no bfloat16 support")
    monkeypatch.chdir(data)
    inp = tmp_path / "input.csv"
    inp.write_text("\n".join(image_lines(data)) + "\n")
    answers = {}
    for precision, engine in (("fp32", "torch"), ("bf16", backend)):
        summary = predict(
            inp,
            tmp_path / "o.csv",
            bundle,
            probabilities=tmp_path / "p.csv",
            precision=precision,
            backend=engine,
            progress=False,
        )
        answers[precision] = {s: float(p) for s, p in rows(tmp_path / "p.csv")}
    assert summary.backend == ("torch cpu bf16" if backend == "torch" else "openvino bf16")
    diff = max(abs(answers["bf16"][s] - answers["fp32"][s]) for s in answers["fp32"])
    assert 0 < diff <= 5e-3


AVX2_ONLY = "flags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 avx fma avx2 bmi2\n"
AVX512_BF16 = AVX2_ONLY.replace("bmi2", "bmi2 avx512f avx512bw avx512_bf16")


def fake_cpuinfo(tmp_path: Path, monkeypatch, flags: str) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\n{flags}\nprocessor\t: 1\n{flags}")
    monkeypatch.setattr("reference_model.cpus.CPUINFO", cpuinfo)


def test_the_cpus_flags_decide_the_engine_and_bf16_and_the_summary_line_names_the_cpu(
    data, bundle, tmp_path, monkeypatch
):
    """The rule bench/README.md backs, read from /proc/cpuinfo's flags: fp32 on OpenVINO on an
    AVX-512 CPU, on ONNX Runtime on an AVX2-only one. On a CPU without bfloat16 instructions
    forcing OpenVINO bf16 is exit 2 with one line; automatic bf16 falls back to torch where
    torch takes bf16, else is refused as before. The summary line names the CPU's kind."""
    from click.testing import CliRunner

    from reference_model import cli, cpus, engines

    monkeypatch.chdir(data)
    (tmp_path / "input.csv").write_text("\n".join(image_lines(data)[:6]) + "\n")

    def predict_py(*options: str, torch_bf16: bool = True):
        monkeypatch.setattr(engines, "cpu_has_bf16", lambda torch: torch_bf16)
        args = [str(tmp_path / "input.csv"), str(tmp_path / "o.csv"), "--bundle", str(bundle), *options]
        return CliRunner().invoke(cli.predict, args)

    fake_cpuinfo(tmp_path, monkeypatch, AVX512_BF16)
    assert cpus.cpu_kind() == "AVX512-BF16" and cpus.cpu_has_native_bf16()
    fp32 = predict_py()
    assert fp32.exit_code == 0 and "images/s, openvino fp32, chosen for this AVX512-BF16 CPU)" in fp32.stderr
    (tmp_path / "o.csv").unlink()

    fake_cpuinfo(tmp_path, monkeypatch, AVX2_ONLY)
    assert cpus.cpu_kind() == "AVX2" and not cpus.cpu_has_native_bf16()

    forced = predict_py("--backend", "openvino", "--precision", "bf16")
    assert forced.exit_code == 2 and forced.stderr.count("\n") == 1, forced.output
    assert "OpenVINO runs bf16 only on a CPU with bfloat16 instructions (AMX or AVX512-BF16)" in forced.stderr
    refused = predict_py("--precision", "bf16", torch_bf16=False)
    assert refused.exit_code == 2 and "--precision bf16 needs a CPU with bfloat16 support" in refused.stderr
    assert not (tmp_path / "o.csv").exists()
    torch_bf16 = predict_py("--precision", "bf16")
    assert torch_bf16.exit_code == 0, torch_bf16.output
    assert "images/s, torch cpu bf16, chosen for this AVX2 CPU)" in torch_bf16.stderr
    fp32 = predict_py()
    assert fp32.exit_code == 0 and "images/s, onnxruntime fp32, chosen for this AVX2 CPU)" in fp32.stderr


def test_a_quoted_image_path_holding_a_comma_is_one_path(data, bundle, reference, tmp_path, monkeypatch):
    """RFC 4180: `"a,b/image1.png"` is one path (it used to fail the whole input), and its study
    is written quoted, so that the scorer reads it back as that one study."""
    study = next(iter(reference))
    comma = study.replace("/patient", "/patient,")
    shutil.copytree(data / study, tmp_path / comma)
    images = sorted(p.name for p in (data / study).iterdir())
    inp = tmp_path / "input.csv"
    inp.write_text("".join(f'"{comma}{name}"\n' for name in images))
    monkeypatch.chdir(tmp_path)
    predict(inp, tmp_path / "o.csv", bundle, probabilities=tmp_path / "p.csv", progress=False)
    [label] = read_predictions(tmp_path / "o.csv")
    [probability] = read_predictions(tmp_path / "p.csv", PROBABILITIES)
    assert label.written == probability.written == comma
    assert probability.value == pytest.approx(reference[study], abs=1e-6)


def test_read_input_rejects_nothing_it_can_read_and_explains_what_it_cannot(tmp_path):
    (tmp_path / "a.csv").write_text(
        "path\na/XR_HAND/p/s1/image1.png\na/XR_HAND/p/s1/image2.png\nb/XR_HAND/p/s2/image1.png\n"
    )
    images, studies = read_input(tmp_path / "a.csv", cwd=tmp_path)
    assert len(images) == 3 and [s.key for s in studies] == ["a/XR_HAND/p/s1/", "b/XR_HAND/p/s2/"]
    assert [s.images for s in studies] == [[0, 1], [2]]
    (tmp_path / "b.csv").write_text("a,b\n")
    with pytest.raises(PredictError, match="expected one image path per line"):
        read_input(tmp_path / "b.csv")
    # Empty fields after a path are read (one warning); a second value is not an image list.
    (tmp_path / "c.csv").write_text("image_path,label\na/XR_HAND/p/s1/image1.png,1\n")
    with pytest.raises(PredictError, match="expected one image path per line, found 2 fields on line 2"):
        read_input(tmp_path / "c.csv")


def studies_of(lines: list[str]) -> dict[str, list[str]]:
    by_study: dict[str, list[str]] = {}
    for line in lines:
        by_study.setdefault(line.rsplit("/", 1)[0] + "/", []).append(line)
    return by_study


def test_any_exception_while_decoding_a_view_is_a_short_warning_not_the_end_of_the_run(
    data, bundle, reference, tmp_path, monkeypatch
):
    """A MemoryError (what an address-space limit gives: the bwrap sandbox's prlimit) inside
    PIL's decoder or in the resize after it, and a PIL error of a type other than OSError,
    each cost one view, as does a path of 100,000 characters (longer, and every CSV reader of
    the kit refuses the field: 131,072 at most); every warning stays a short line."""
    from PIL import ImageFile

    work = tmp_path / "data"
    shutil.copytree(data / "MURA-v1.1", work / "MURA-v1.1")
    lines = image_lines(data)
    multi = [images for images in studies_of(lines).values() if len(images) >= 2]
    in_decoder, odd_error, in_resize = (images[0] for images in multi[:3])
    with Image.open(work / in_resize) as image:
        image.resize((40, 44)).save(work / in_resize)  # the only view of this size

    load, resize = ImageFile.ImageFile.load, Image.Image.resize

    def failing_load(self):
        if str(self.filename).endswith(in_decoder):
            raise MemoryError
        if str(self.filename).endswith(odd_error):
            raise struct.error("unpack requires a buffer of 4 bytes")  # as a damaged TIFF header gives
        return load(self)

    def failing_resize(self, *args, **kwargs):
        if self.size == (40, 44):
            raise MemoryError
        return resize(self, *args, **kwargs)

    monkeypatch.setattr(ImageFile.ImageFile, "load", failing_load)
    monkeypatch.setattr(Image.Image, "resize", failing_resize)
    long_study = "MURA-v1.1/test/XR_HAND/patient1/" + "x" * 100_000 + "/"
    (tmp_path / "input.csv").write_text("\n".join([*lines, long_study + "image1.png"]) + "\n")
    monkeypatch.chdir(work)
    warned: list[str] = []
    summary = predict(
        tmp_path / "input.csv",
        tmp_path / "o.csv",
        bundle,
        probabilities=tmp_path / "p.csv",
        progress=False,
        warn=warned.append,
    )
    assert (summary.unreadable, summary.fallback) == (4, 1)
    assert len(warned) == 5 and all(len(w) < 600 and "\n" not in w for w in warned), [w[:200] for w in warned]
    for image, reason in (
        (in_decoder, "cannot be decoded in the memory available"),
        (odd_error, "cannot be decoded (error: unpack requires a buffer of 4 bytes)"),
        (in_resize, "cannot be decoded (MemoryError)"),
    ):
        assert any(image in w and reason in w and "predicted from its other views" in w for w in warned), (
            image
        )
    assert any("File name too long" in w for w in warned)
    assert any("has no readable view; it gets the fallback" in w for w in warned)
    probs = {s: float(p) for s, p in rows(tmp_path / "p.csv")}
    assert list(probs) == [*reference, long_study] and probs[long_study] == 0.0
    changed = {image.rsplit("/", 1)[0] + "/" for image in (in_decoder, odd_error, in_resize)}
    for study in reference:  # the three studies are predicted from their other views
        assert (probs[study] != reference[study]) == (study in changed), study
        assert (probs[study] == pytest.approx(reference[study], abs=1e-6)) == (study not in changed), study


@pytest.fixture(scope="module")
def nan_bundle(data, tmp_path_factory) -> tuple[Path, dict[str, float | None]]:
    """A bundle whose second member returns NaN for about half the test views (and 1.0 for the
    rest), and each view's probability as torch computes it (None: NaN). The member's head
    weighs one feature by +inf: +inf * 0 is NaN, so the views where that feature (after the
    last norm and ReLU) is 0 give NaN; the norm's shift puts that cut in a wide gap between
    the test views' values, so ONNX Runtime and torch agree on which views they are."""
    import torch

    from reference_model.bundle import load_bundle, write_bundle
    from reference_model.model import EnsembleNet, build_model
    from reference_model.preprocess import IMAGENET_MEAN, IMAGENET_STD, decode

    torch.manual_seed(1)
    good, bad = build_model("densenet121", pretrained=False), build_model("densenet121", pretrained=False)
    lines = image_lines(data)
    images = np.stack([decode(data / line, 32, IMAGENET_MEAN, IMAGENET_STD) for line in lines])
    batch = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    with torch.inference_mode():
        feature = bad.eval().features[:-1](batch)[:, 0].amax(dim=(1, 2)).numpy()  # before norm5
    values = np.sort(feature)
    quarter = len(values) // 4
    cut = quarter + int(np.argmax(np.diff(values)[quarter : 3 * quarter]))
    state = bad.state_dict()
    state["features.norm5.running_mean"][0] = float(values[cut] + values[cut + 1]) / 2
    state["features.norm5.running_var"][0] = 1 - bad.features.norm5.eps
    state["features.norm5.weight"][0], state["features.norm5.bias"][0] = 1.0, 0.0
    state["classifier.weight"][0, 0] = float("inf")
    out = tmp_path_factory.mktemp("nan-bundle") / "bundle"
    write_bundle(
        [("good", good.state_dict(), None, None), ("nan", state, None, None)], "densenet121", 32, out
    )
    with torch.inference_mode():
        views = EnsembleNet(load_bundle(out).models).eval()(batch).numpy()
    assert np.isnan(views[:, 0]).sum() == 0 and 0 < np.isnan(views[:, 1]).sum() < len(lines)
    return out, {line: None if np.isnan(v).any() else float(v.mean()) for line, v in zip(lines, views)}


@pytest.mark.parametrize("backend", ["openvino", "onnx", "torch"])
def test_a_member_returning_nan_makes_the_view_unreadable_and_nan_never_reaches_the_output(
    data, nan_bundle, tmp_path, monkeypatch, backend
):
    bundle_path, expected = nan_bundle
    by_study = studies_of(image_lines(data))
    dead = [s for s, images in by_study.items() if all(expected[i] is None for i in images)]
    mixed = [s for s, images in by_study.items() if len({expected[i] is None for i in images}) == 2]
    assert dead and mixed, "the NaN views should empty some studies and thin others"
    monkeypatch.chdir(data)
    (tmp_path / "input.csv").write_text("\n".join(image_lines(data)) + "\n")
    warned: list[str] = []
    summary = predict(
        tmp_path / "input.csv",
        tmp_path / "o.csv",
        bundle_path,
        probabilities=tmp_path / "p.csv",
        backend=backend,
        progress=False,
        warn=warned.append,
    )
    assert summary.backend == ENGINE_NAMES[backend]
    assert "nan" not in (tmp_path / "p.csv").read_text().lower()
    nan_views = [image for image, p in expected.items() if p is None]
    assert (summary.unreadable, summary.fallback) == (len(nan_views), len(dead))
    for image in nan_views:
        (warning,) = [w for w in warned if image in w]
        assert "ensemble member 2 returned NaN or infinity for it" in warning
    probs = {s: float(p) for s, p in rows(tmp_path / "p.csv")}
    labels = dict(rows(tmp_path / "o.csv"))
    assert list(probs) == list(by_study) == list(labels)
    for study, images in by_study.items():
        readable = [expected[i] for i in images if expected[i] is not None]
        if readable:
            assert probs[study] == pytest.approx(np.mean(readable), abs=1e-5), study
        else:
            assert probs[study] == 0.0 and labels[study] == "0"
            assert any(study in w and "has no readable view" in w for w in warned)


def test_an_image_listed_twice_counts_once_in_its_study_with_one_warning(
    data, bundle, reference, tmp_path, monkeypatch
):
    lines = image_lines(data)
    multi = [images for images in studies_of(lines).values() if len(images) >= 2]
    first, second, third = multi[0][0], multi[1][1], multi[2][0]
    # Again as written, twice more; in absolute form, the same image after read_input; and
    # spelled `./...`, the same file.
    listed = [*lines, first, str(data / second), first, f"./{third}"]
    (tmp_path / "input.csv").write_text("\n".join(listed) + "\n")
    monkeypatch.chdir(data)
    warned: list[str] = []
    summary = predict(
        tmp_path / "input.csv",
        tmp_path / "o.csv",
        bundle,
        probabilities=tmp_path / "p.csv",
        progress=False,
        warn=warned.append,
    )
    probs = {s: float(p) for s, p in rows(tmp_path / "p.csv")}
    assert list(probs) == list(reference)
    assert max(abs(probs[s] - reference[s]) for s in probs) < 1e-6
    assert summary.images == len(lines)
    assert warned == [
        f"3 images are listed more than once ({first}, {second}, ./{third}); each counts once in its "
        "study's mean"
    ]


def test_where_the_cpu_topology_is_hidden_openvino_is_never_started(data, bundle, tmp_path, monkeypatch):
    """Without /sys/devices/system/cpu (some sandboxes hide /sys) OpenVINO maps the CPUs by pinning
    a thread to each, and where a seccomp filter makes pinning a no-op it dies of SIGSEGV while
    compiling (the kit's bwrap sandbox did): the automatic choice passes it over for ONNX Runtime,
    and asking for it is exit 2 with one line."""
    from click.testing import CliRunner

    from reference_model import cli

    monkeypatch.setattr("reference_model.cpus.CPU_TOPOLOGY", tmp_path / "no-sys")
    monkeypatch.chdir(data)
    (tmp_path / "input.csv").write_text("\n".join(image_lines(data)[:6]) + "\n")
    args = [str(tmp_path / "input.csv"), str(tmp_path / "o.csv"), "--bundle", str(bundle)]
    auto = CliRunner().invoke(cli.predict, args)
    assert auto.exit_code == 0 and "images/s, onnxruntime fp32, chosen for this" in auto.stderr, auto.output
    (tmp_path / "o.csv").unlink()
    forced = CliRunner().invoke(cli.predict, [*args, "--backend", "openvino"])
    assert forced.exit_code == 2 and forced.stderr.count("\n") == 1, forced.output
    assert "--backend openvino cannot be used: OpenVINO needs the CPU topology in" in forced.stderr
    assert not (tmp_path / "o.csv").exists()
