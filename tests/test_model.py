"""The reference model: data, loss weights, training (learning, resume, DDP), bundles and CAM."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reference_model import bundle as bundles
from reference_model.cam import cam_study, class_activation_maps
from reference_model.data import ImageRecord, load_image, loss_weights, read_split
from reference_model.model import build_model
from reference_model.synth import Options, generate
from reference_model.train import TrainConfig, load_checkpoint, train
from scorer.metrics import cohen_kappa, confusion_counts
from scorer.paths import study_of_image

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
# Findings a small network learns in three epochs from scratch at 128 px: metal plates and
# fracture lines (the subtle ones need the real recipe: ImageNet weights, 224 px, many epochs).
DATA = Options(
    seed=11,
    train_studies=200,
    valid_studies=40,
    test_studies=60,
    image_size=128,
    abnormal_rate=0.5,
    findings=("hardware", "fracture"),
)


def config(data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(
        arch="densenet121", image_size=128, epochs=3, batch_size=16, lr=1e-3, plateau_patience=2, seed=0
    )
    base.update(kw)
    return TrainConfig(data=str(data), out=str(out), **base)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("model")
    generate(root / "data", DATA, workers=2)
    train(config(root / "data", root / "run"))
    bundles.make_bundle([root / "run"], root / "bundle")
    return root


def study_probabilities(bundle, data: Path, split: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    records = read_split(data, split)
    studies = list(dict.fromkeys(r.study for r in records))
    labels = {r.study: r.label for r in records}
    probs = []
    for study in studies:
        images = [load_image(data / r.path) for r in records if r.study == study]
        probs.append(class_activation_maps(bundle, images)[1].mean())
    return studies, np.array([labels[s] for s in studies]), np.array(probs)


@pytest.mark.slow
def test_a_short_training_run_learns(trained):
    """On 60 held-out generated studies the study-level kappa must reach 0.5. A predictor that
    ignores the images has kappa ~ N(0, 1/n): its standard error here is about 0.13, so 0.5 is
    nearly four standard errors (p < 1e-4); only a model that sees the findings passes."""
    bundle = bundles.load_bundle(trained / "bundle")
    _, labels, probs = study_probabilities(bundle, trained / "data", "test")
    kappa = float(cohen_kappa(*confusion_counts(labels, probs > 0.5)))
    assert kappa >= 0.5, f"kappa {kappa:.3f} on the held-out generated studies"


@pytest.mark.slow
def test_the_run_folder_holds_log_and_checkpoints(trained):
    run = trained / "run"
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3]
    assert all({"train_loss", "val_loss", "val_kappa", "lr"} <= set(r) for r in log)
    best = load_checkpoint(run / "best.pt")
    assert best["val_loss"] == min(r["val_loss"] for r in log)
    last = load_checkpoint(run / "last.pt")
    assert last["epoch"] == 3 and {"optimizer", "scheduler", "model"} <= set(last)
    assert json.loads((run / "config.json").read_text())["arch"] == "densenet121"


def test_loss_weights_match_a_hand_computation():
    records = (
        [ImageRecord(f"w{i}", f"s{i}/", "WRIST", 1) for i in range(3)]
        + [ImageRecord(f"n{i}", f"t{i}/", "WRIST", 0) for i in range(7)]
        + [ImageRecord(f"e{i}", f"u{i}/", "ELBOW", 1) for i in range(5)]
        + [ImageRecord(f"f{i}", f"v{i}/", "ELBOW", 0) for i in range(5)]
        + [ImageRecord("h", "x/", "HAND", 0)]
    )
    weights = loss_weights(records)
    # WRIST: 3 abnormal and 7 normal images -> w_T1 = 7/10, w_T0 = 3/10.
    assert weights["WRIST"] == pytest.approx((0.7, 0.3))
    assert weights["ELBOW"] == pytest.approx((0.5, 0.5))
    assert weights["HAND"] == (1.0, 1.0)  # one class only: nothing to balance


@pytest.mark.slow
def test_resume_continues_where_it_stopped(tmp_path):
    generate(
        tmp_path / "data", Options(seed=2, train_studies=20, valid_studies=6, test_studies=2, image_size=48)
    )
    short = dict(max_steps=3, batch_size=4, image_size=32)
    train(config(tmp_path / "data", tmp_path / "straight", epochs=2, **short))
    train(config(tmp_path / "data", tmp_path / "split", epochs=1, **short))
    train(config(tmp_path / "data", tmp_path / "split", epochs=2, **short), resume=True)
    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(tmp_path / "split" / "last.pt")
    assert b["epoch"] == 2
    for key, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][key], tensor, rtol=0, atol=1e-6, msg=key)
    logs = [json.loads(x) for x in (tmp_path / "split" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in logs] == [1, 2]


@pytest.mark.slow
def test_two_process_gloo_run_trains_and_the_ranks_agree(tmp_path):
    generate(
        tmp_path / "data", Options(seed=3, train_studies=24, valid_studies=6, test_studies=2, image_size=48)
    )
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29517",
        "-m",
        "reference_model.train",
        str(tmp_path / "data"),
        "--out",
        str(tmp_path / "ddp"),
        "--arch",
        "densenet121",
        "--image-size",
        "32",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--max-steps",
        "3",
        "--device",
        "cpu",
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env={**ENV, "OMP_NUM_THREADS": "1"}, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(x) for x in (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()]
    assert lines[0]["epoch"] == 1
    assert lines[-1]["ranks"] == 2 and lines[-1]["ranks_agree"] is True
    assert len(set(lines[-1]["weights_sha256"])) == 1


@pytest.mark.slow
def test_bundles_round_trip(trained):
    bundle = bundles.load_bundle(trained / "bundle")
    best = load_checkpoint(trained / "run" / "best.pt")
    m = bundle.manifest
    assert (m.architecture, m.input_size, m.aggregation) == ("densenet121", 128, "mean")
    assert (m.threshold, m.tta_hflip) == (0.5, False)
    assert len(bundle.models) == 1 and not bundle.models[0].training
    for key, tensor in best["model"].items():
        assert torch.equal(bundle.models[0].state_dict()[key], tensor)
    # Two members from the same checkpoint make a two-member ensemble.
    bundles.make_bundle([trained / "run", trained / "run" / "best.pt"], trained / "pair", threshold=0.4)
    pair = bundles.load_bundle(trained / "pair")
    assert len(pair.models) == 2 and pair.manifest.threshold == 0.4


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.slow
def test_a_tampered_bundle_is_refused_with_a_clear_message(trained, tmp_path):
    b = _copy(trained / "bundle", tmp_path / "tampered")
    data = bytearray((b / "member-0.pt").read_bytes())
    data[-100] ^= 0xFF
    (b / "member-0.pt").write_bytes(bytes(data))
    with pytest.raises(bundles.BundleError, match="does not match its sha256"):
        bundles.load_bundle(b)

    b = _copy(trained / "bundle", tmp_path / "other-arch")
    manifest = json.loads((b / "manifest.json").read_text())
    manifest["architecture"] = "densenet169"
    (b / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(bundles.BundleError, match="does not fit densenet169"):
        bundles.load_bundle(b)

    for change, needle in [
        (lambda m: m.pop("threshold"), "'threshold' is missing"),
        (lambda m: m.update(threshold=1.5), "'threshold' should be a number in"),
        (lambda m: m.update(members=[]), "'members' should be a non-empty list"),
        (lambda m: m["members"][0].update(file="../../etc/passwd"), "file name inside the bundle"),
        (lambda m: m.update(version=99), "upgrade the kit"),
    ]:
        b = _copy(trained / "bundle", tmp_path / f"m{len(list(tmp_path.iterdir()))}")
        manifest = json.loads((b / "manifest.json").read_text())
        change(manifest)
        (b / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(bundles.BundleError, match=needle.replace("(", r"\(")):
            bundles.load_bundle(b)
    b = _copy(trained / "bundle", tmp_path / "broken-json")
    (b / "manifest.json").write_text("{not json")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mura",
            "cam",
            str(trained / "data"),
            "--bundle",
            str(b),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert proc.returncode == 1 and "not valid JSON" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_cam_maps_have_the_image_size_and_peak_on_the_finding(trained, tmp_path):
    bundle = bundles.load_bundle(trained / "bundle")
    data = trained / "data"
    boxes = [line.split(",") for line in (data / "MURA-v1.1" / "test_findings.csv").read_text().splitlines()]
    hits, chance = 0, 0.0
    cells = bundle.manifest.input_size // 32  # DenseNet's final maps are input/32 on a side
    for path, _finding, *box in boxes:
        image = load_image(data / path)
        (cam,), _ = class_activation_maps(bundle, [image])
        assert cam.shape == (image.height, image.width)
        # "On the finding" at the map's own resolution: the peak lies within half a map cell of
        # the finding's box. `chance` is how often a peak placed at random would.
        y, x = np.unravel_index(np.argmax(cam), cam.shape)
        sx, sy = image.width / cells / 2, image.height / cells / 2
        x0, y0, x1, y1 = map(int, box)
        hits += x0 - sx <= x <= x1 + sx and y0 - sy <= y <= y1 + sy
        chance += min(1, (x1 - x0 + 2 * sx) / image.width) * min(1, (y1 - y0 + 2 * sy) / image.height)
    rate, chance = hits / len(boxes), chance / len(boxes)
    assert rate > 0.5 and rate > 2 * chance, (
        f"peak on the finding in {rate:.0%} of views (chance {chance:.0%})"
    )
    # The command writes one overlay per view with the probability in the picture.
    study = data / study_of_image(boxes[0][0])
    probability, written = cam_study(study, bundle, tmp_path / "cam")
    assert len(written) == len(list(study.glob("*.png"))) and 0 <= probability <= 1
    with Image.open(written[0]) as picture, Image.open(study / "image1.png") as original:
        assert picture.width >= original.width and picture.height > original.height  # caption strip


def test_imagenet_weights_load_from_the_local_cache_never_the_network(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    build_model("densenet121", pretrained=True)
    assert "no ImageNet weights for densenet121" in capsys.readouterr().err
    import torchvision

    reference = torchvision.models.densenet121(weights=None).state_dict()
    # Like torchvision's published file: old `norm.1`-style names, no num_batches_tracked.
    legacy = {
        k.replace("norm1.", "norm.1.").replace("conv2.", "conv.2."): v
        for k, v in reference.items()
        if not k.endswith("num_batches_tracked")
    }
    target = tmp_path / "hub" / "checkpoints" / "densenet121-a639ec97.pth"
    target.parent.mkdir(parents=True)
    torch.save(legacy, target)
    model = build_model("densenet121", pretrained=True)
    assert capsys.readouterr().err == ""
    key = "features.denseblock1.denselayer1.norm1.weight"
    assert torch.equal(model.state_dict()[key], reference[key])
    assert model.classifier.out_features == 1


def test_load_image_reads_every_mode_and_refuses_broken_files(tmp_path):
    grey = np.tile(np.arange(256, dtype=np.uint8), (40, 1))
    Image.fromarray(grey).save(tmp_path / "l.png")
    noisy = np.random.default_rng(0).integers(0, 256, (300, 300), dtype=np.uint8)
    Image.fromarray(noisy).save(tmp_path / "noisy.png")
    Image.fromarray(grey.astype(np.uint16) * 200).save(tmp_path / "i16.png")
    Image.fromarray(grey).convert("RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(grey).convert("P").save(tmp_path / "p.png")
    for name in ("l", "i16", "rgba", "p"):
        image = load_image(tmp_path / f"{name}.png")
        assert image.mode == "RGB" and image.size == (256, 40)
        assert np.asarray(image)[0, -1].max() > 200  # the bright end stays bright
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "cut.png").write_bytes((tmp_path / "noisy.png").read_bytes()[:20_000])
    from reference_model.data import ImageError

    for name, needle in (("empty", "empty"), ("cut", "cannot be decoded"), ("missing", "does not exist")):
        with pytest.raises(ImageError, match=needle):
            load_image(tmp_path / f"{name}.png")


def test_train_reports_bad_input_without_a_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mura", "train", str(tmp_path), "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert proc.returncode == 1 and "expected MURA's index file train_image_paths.csv" in proc.stderr
    assert "Traceback" not in proc.stderr
