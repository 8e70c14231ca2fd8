"""submission/predict.py and reference_model.infer: the contract, robustness, exactness."""

from __future__ import annotations

import json
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
from PIL import Image

from reference_model.infer import PredictError, predict, read_input

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
def bundle(tmp_path_factory) -> Path:
    """Two randomly initialised DenseNet-121 members at 32 px, with their ONNX export."""
    import torch

    from reference_model.bundle import write_bundle
    from reference_model.model import build_model

    torch.manual_seed(0)
    members = [
        (f"random-{i}", build_model("densenet121", pretrained=False).state_dict(), None, None)
        for i in range(2)
    ]
    out = tmp_path_factory.mktemp("predict-bundle") / "bundle"
    write_bundle(members, "densenet121", 32, out)
    # Random heads sit near 0.5; a threshold at the median makes both labels appear.
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
    assert not (tmp_path / "output.csv").read_text().startswith("study")  # no header
    probs = dict(rows(tmp_path / "probs.csv"))
    assert list(probs) == [s for s, _ in out]
    for study, label in out:
        assert int(label) == int(float(probs[study]) > 0.5)
        assert float(probs[study]) == pytest.approx(reference[study], abs=1e-6)
    assert "predicted 24 studies from" in proc.stderr and "images/s" in proc.stderr


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
    ],
)
def test_unusable_input_or_bundle_is_exit_2_and_no_output(data, bundle, tmp_path, case, message):
    inp = tmp_path / "input.csv"
    inp.write_text("\n".join(image_lines(data)[:5]) + "\n")
    b = tmp_path / "bundle"
    shutil.copytree(bundle, b)
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
    else:
        with (b / "ensemble.onnx").open("ab") as f:
            f.write(b"x")
    out = tmp_path / "output.csv"
    proc = run([inp, out, "--bundle", b], cwd=data)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1  # one line
    assert not out.exists()


def test_a_killed_run_leaves_no_output_and_an_old_output_survives_a_failure(data, bundle, tmp_path):
    # Long enough to be mid-run when killed.
    (tmp_path / "input.csv").write_text("\n".join(image_lines(data) * 40) + "\n")
    out = tmp_path / "output.csv"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(PREDICT),
            str(tmp_path / "input.csv"),
            str(out),
            "--bundle",
            str(bundle),
            "--backend",
            "torch",
        ],
        cwd=data,
        env=ENV,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(8)
    assert proc.poll() is None, "the run ended before it could be killed; make the input longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    # A failing run leaves an earlier output.csv as it was.
    out.write_text("earlier answer\n")
    proc = run([tmp_path / "input.csv", out, "--bundle", tmp_path / "nothing-here"], cwd=data)
    assert proc.returncode == 2 and out.read_text() == "earlier answer\n"


def test_fp32_is_the_same_batched_or_one_image_at_a_time_on_both_backends(
    data, bundle, tmp_path, monkeypatch
):
    monkeypatch.chdir(data)
    inp = tmp_path / "input.csv"
    inp.write_text("\n".join(image_lines(data)) + "\n")
    results = {}
    for backend, batch in (("onnx", 16), ("onnx", 1), ("torch", 7), ("torch", 1)):
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
        assert summary.backend.startswith("onnxruntime" if backend == "onnx" else "torch cpu fp32")
        results[(backend, batch)] = np.array([float(p) for _, p in rows(probs)])
    first = results[("onnx", 16)]
    for key, values in results.items():
        assert np.abs(values - first).max() <= 1e-5, key


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
    manifest = json.loads((tta / "manifest.json").read_text())
    manifest["tta_hflip"] = True
    (tta / "manifest.json").write_text(json.dumps(manifest))
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
    expected = [(s, str(int(p > 0.5))) for s, p in reference.items()]
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


def test_bf16_stays_close_to_fp32(data, bundle, reference, tmp_path, monkeypatch):
    import torch

    from reference_model.infer import _cpu_has_bf16

    if not _cpu_has_bf16(torch):
        pytest.skip("this CPU has no bfloat16 support")
    monkeypatch.chdir(data)
    inp = tmp_path / "input.csv"
    inp.write_text("\n".join(image_lines(data)) + "\n")
    summary = predict(
        inp, tmp_path / "o.csv", bundle, probabilities=tmp_path / "p.csv", precision="bf16", progress=False
    )
    assert summary.backend == "torch cpu bf16"
    probs = {s: float(p) for s, p in rows(tmp_path / "p.csv")}
    diff = max(abs(probs[s] - reference[s]) for s in reference)
    assert 0 < diff < 0.05


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
