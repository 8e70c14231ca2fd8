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
from bundle_helpers import edit_manifest
from click.testing import CliRunner
from PIL import Image

from mura.cli import cli
from reference_model import bundle as bundles
from reference_model.architectures import ARCHITECTURES
from reference_model.cam import cam_study, class_activation_maps
from reference_model.data import ImageRecord, loss_weights, read_split
from reference_model.model import ModelError, build_model, feature_maps, head, select_device
from reference_model.preprocess import ImageError, load_image
from reference_model.synth import Options, generate
from reference_model.training import TrainConfig, TrainError, load_checkpoint, train, weights_checksum
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


def torchrun(data: Path, out: Path, port: int, *args: str) -> subprocess.CompletedProcess:
    """`mura train` on 2 CPU processes (gloo); the timeout bounds a run whose ranks would wait
    for each other forever."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(port),
        "-m",
        "reference_model.train",
        str(data),
        "--out",
        str(out),
        "--arch",
        "densenet121",
        "--image-size",
        "32",
        "--epochs",
        "1",
        "--max-steps",
        "3",
        "--device",
        "cpu",
        *args,
    ]
    env = {**ENV, "OMP_NUM_THREADS": "1", "TORCH_HOME": str(out.parent / "no-torch-home")}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
def test_two_process_gloo_run_trains_and_the_ranks_agree(tmp_path):
    generate(
        tmp_path / "data", Options(seed=3, train_studies=24, valid_studies=6, test_studies=2, image_size=48)
    )
    proc = torchrun(tmp_path / "data", tmp_path / "ddp", 29517, "--batch-size", "4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(x) for x in (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()]
    assert lines[0]["epoch"] == 1
    # --batch-size is the global batch: 3 steps of 4 images (2 per process), not 3 x 4 x 2.
    assert lines[0]["train_images"] == 3 * 4
    assert lines[-1]["ranks"] == 2 and lines[-1]["ranks_agree"] is True
    assert len(set(lines[-1]["weights_sha256"])) == 1
    # Training changed the parameters (batch-norm buffers change in any forward pass), and the
    # saved last.pt holds the weights the ranks agree on.
    assert lines[-1]["parameters_sha256"] != lines[-1]["start_parameters_sha256"]
    model = build_model("densenet121", pretrained=False)
    model.load_state_dict(load_checkpoint(tmp_path / "ddp" / "last.pt")["model"])
    assert weights_checksum(model) == lines[-1]["weights_sha256"][0]
    assert weights_checksum(model, parameters_only=True) == lines[-1]["parameters_sha256"]


@pytest.mark.slow
def test_two_processes_both_stop_when_the_run_folder_already_holds_a_run(tmp_path):
    """Only rank 0 owns the run folder; the other rank must stop with it, not wait in DDP's
    setup for a peer that has gone."""
    generate(
        tmp_path / "data", Options(seed=3, train_studies=6, valid_studies=2, test_studies=2, image_size=32)
    )
    (tmp_path / "ddp").mkdir()
    (tmp_path / "ddp" / "last.pt").write_bytes(b"an earlier run")
    proc = torchrun(tmp_path / "data", tmp_path / "ddp", 29518, "--batch-size", "4")
    assert proc.returncode != 0
    assert proc.stderr.count("already holds a run; pass --resume") == 2, proc.stderr[-3000:]  # each rank
    assert "RuntimeError" not in proc.stderr  # rank 1 used to die of a reset gloo connection
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == ["last.pt"]


def test_the_global_batch_must_split_evenly_over_the_processes(tmp_path):
    config(tmp_path, tmp_path / "run", batch_size=8).check(world=2)
    with pytest.raises(TrainError, match=r"--batch-size 5 is the global batch.*multiple of 2"):
        config(tmp_path, tmp_path / "run", batch_size=5).check(world=2)


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
    # A shared bundle names where its members came from without the local file system's paths.
    text = (trained / "pair" / "manifest.json").read_text()
    assert str(trained) not in text and "/tmp" not in text
    source = f"run/best.pt: densenet121, seed 0, epoch {best['epoch']}, val loss {best['val_loss']:.4f}"
    assert [member.source for member in pair.manifest.members] == [source, source]


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

    # A hand edit (here: the input size, which the weights do not record) is refused.
    b = _copy(trained / "bundle", tmp_path / "edited")
    edit_manifest(b, lambda m: m.update(input_size=64), reseal=False)
    with pytest.raises(bundles.BundleError, match=r"does not match its content_sha256.*rebuild the bundle"):
        bundles.load_bundle(b)
    edit_manifest(b, lambda m: m.pop(bundles.DIGEST_FIELD), reseal=False)
    with pytest.raises(bundles.BundleError, match="has no content_sha256"):
        bundles.load_bundle(b)

    b = _copy(trained / "bundle", tmp_path / "other-arch")
    edit_manifest(b, lambda m: m.update(architecture="densenet169"))
    with pytest.raises(bundles.BundleError, match="does not fit densenet169"):
        bundles.load_bundle(b)

    # A member whose sha256 matches but which is no state dict: the kit's message, not torch's.
    b = _copy(trained / "bundle", tmp_path / "not-torch")
    (b / "member-0.pt").write_text("not a torch file")
    edit_manifest(b, lambda m: m["members"][0].update(sha256=bundles.file_sha256(b / "member-0.pt")))
    with pytest.raises(bundles.BundleError, match="is not a PyTorch state-dict file") as caught:
        bundles.load_bundle(b)
    assert "weights_only" not in str(caught.value)

    for change, needle in [
        (lambda m: m.pop("threshold"), "'threshold' is missing"),
        (lambda m: m.update(threshold=1.5), "'threshold' should be a number in"),
        (lambda m: m.update(members=[]), "'members' should be a non-empty list"),
        (lambda m: m["members"][0].update(file="../../etc/passwd"), "file name inside the bundle"),
        (lambda m: m.update(version=99), "upgrade the kit"),
    ]:
        b = _copy(trained / "bundle", tmp_path / f"m{len(list(tmp_path.iterdir()))}")
        edit_manifest(b, change)
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
    # A user error exits 3 (the house rule); the old assertion of 1, the code for a bug, was wrong.
    assert proc.returncode == 3 and "not valid JSON" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_cam_maps_have_the_image_size_and_peak_on_the_finding(trained, tmp_path):
    bundle = bundles.load_bundle(trained / "bundle")
    data = trained / "data"
    boxes = [line.split(",") for line in (data / "MURA-v1.1" / "test_findings.csv").read_text().splitlines()]
    hits, chance, flagged = 0, 0.0, 0
    cells = bundle.manifest.input_size // 32  # DenseNet's final maps are input/32 on a side
    for path, _finding, *box in boxes:
        image = load_image(data / path)
        (cam,), (probability,) = class_activation_maps(bundle, [image])
        assert cam.shape == (image.height, image.width)
        # A map shows where the model saw an abnormality: it is judged on the views the model
        # calls abnormal. (Three epochs from scratch learn the plates everywhere but the thin
        # fracture lines on some CPUs only: which ones depends on the CPU's float kernels.)
        if probability <= bundle.manifest.threshold:
            continue
        flagged += 1
        # "On the finding" at the map's own resolution: the peak lies within half a map cell of
        # the finding's box. `chance` is how often a peak placed at random would.
        y, x = np.unravel_index(np.argmax(cam), cam.shape)
        sx, sy = image.width / cells / 2, image.height / cells / 2
        x0, y0, x1, y1 = map(int, box)
        hits += x0 - sx <= x <= x1 + sx and y0 - sy <= y <= y1 + sy
        chance += min(1, (x1 - x0 + 2 * sx) / image.width) * min(1, (y1 - y0 + 2 * sy) / image.height)
    assert flagged >= len(boxes) // 4, f"only {flagged} of {len(boxes)} finding views called abnormal"
    rate, chance = hits / flagged, chance / flagged
    assert rate > 0.5 and rate > 2 * chance, (
        f"peak on the finding in {rate:.0%} of {flagged} flagged views (chance {chance:.0%})"
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
    # A user error exits 3 (the house rule); the old assertion of 1, the code for a bug, was wrong.
    assert proc.returncode == 3 and "expected MURA's index file train_image_paths.csv" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_float_image_with_nan_pixels_reads_them_as_black_without_a_numpy_warning(tmp_path):
    import warnings

    array = np.tile(np.linspace(0, 1000, 64, dtype=np.float32), (32, 1))
    array[:, :8] = np.nan
    array[0, 10] = np.inf
    Image.fromarray(array, mode="F").save(tmp_path / "nan.tif")
    Image.fromarray(np.full((8, 8), np.nan, dtype=np.float32), mode="F").save(tmp_path / "all-nan.tif")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "invalid value encountered in cast" fails the test
        pixels = np.asarray(load_image(tmp_path / "nan.tif"))
        assert pixels[:, :8].max() == 0 and pixels[0, 10].max() == 0  # NaN and inf: 0
        assert pixels[1, -1].max() == 255  # the finite range still fills 8 bits
        with pytest.raises(ImageError, match="holds no finite pixel values"):
            load_image(tmp_path / "all-nan.tif")


# What each EXIF orientation asks a viewer to do to the stored pixels (rows, columns), in numpy.
UPRIGHT = {
    2: lambda a: a[:, ::-1],  # mirrored
    3: lambda a: a[::-1, ::-1],  # upside down
    6: lambda a: np.rot90(a, -1),  # stored turned left: turn clockwise
    8: lambda a: np.rot90(a, 1),  # stored turned right: turn anticlockwise
}


def tagged(orientation: int):
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def assert_every_reader_sees(path: Path, expected: np.ndarray, tmp_path: Path) -> None:
    """The image at `path` reaches CAM (load_image), prediction (preprocess.decode) and training
    (MuraImages) exactly as an untagged 8-bit PNG of `expected` (rows x columns, grey) does."""
    from reference_model.data import MuraImages
    from reference_model.preprocess import IMAGENET_MEAN, IMAGENET_STD, decode

    expected = np.ascontiguousarray(expected)
    assert np.array_equal(np.asarray(load_image(path)), np.repeat(expected[..., None], 3, axis=2))
    plain = tmp_path / "plain" / "XR_HAND" / "patient1" / "study1" / "image1.png"
    plain.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(expected).save(plain)
    for size in (16, 7):  # resized up and down, as each reader resizes
        assert np.array_equal(
            decode(path, size, IMAGENET_MEAN, IMAGENET_STD), decode(plain, size, IMAGENET_MEAN, IMAGENET_STD)
        )
    records = [ImageRecord(str(p), "XR_HAND/patient1/study1/", "HAND", 0) for p in (path, plain)]
    dataset = MuraImages("/", records, 16, False, loss_weights(records))
    assert torch.equal(dataset[0][0], dataset[1][0])


def test_the_exif_orientation_is_applied_in_training_prediction_and_cam(tmp_path):
    stored = np.arange(8 * 12, dtype=np.uint8).reshape(8, 12) * 2  # 12 wide, 8 high
    for orientation, upright in UPRIGHT.items():
        png = tmp_path / f"o{orientation}.png"
        Image.fromarray(stored).save(png, exif=tagged(orientation))
        assert_every_reader_sees(png, upright(stored), tmp_path)
    # JPEG is lossy: what matters is that the decoded pixels are turned as the tag says.
    jpeg = tmp_path / "o6.jpg"
    Image.fromarray(stored).save(jpeg, exif=tagged(6), quality=95)
    with Image.open(jpeg) as raw:
        as_stored = np.asarray(raw.convert("L"))
    assert_every_reader_sees(jpeg, UPRIGHT[6](as_stored), tmp_path)
    # TIFF's own orientation tag (Pillow turns LZW TIFFs as it loads them; not a second time).
    tiff = tmp_path / "o8.tif"
    Image.fromarray(stored).save(tiff, exif=tagged(8), compression="tiff_lzw")
    assert_every_reader_sees(tiff, UPRIGHT[8](stored), tmp_path)


def test_cam_draws_an_exif_tagged_view_upright(tmp_path):
    """`mura cam` reads views as prediction does: a tagged view gives the same map, overlay and
    probability as its upright twin."""
    torch.manual_seed(0)
    state = build_model("densenet121", pretrained=False).state_dict()
    bundles.write_bundle([("random", state, None, None)], "densenet121", 32, tmp_path / "b", onnx=False)
    bundle = bundles.load_bundle(tmp_path / "b")
    stored = np.random.default_rng(0).integers(0, 256, (24, 40), dtype=np.uint8)
    for name, picture, extra in (
        ("tagged", stored, {"exif": tagged(6)}),
        ("upright", UPRIGHT[6](stored), {}),
    ):
        (tmp_path / name).mkdir()
        Image.fromarray(np.ascontiguousarray(picture)).save(tmp_path / name / "image1.png", **extra)
    (p_tagged, (tagged_png,)), (p_upright, (upright_png,)) = (
        cam_study(tmp_path / name, bundle, tmp_path / f"cam-{name}") for name in ("tagged", "upright")
    )
    assert p_tagged == p_upright
    with Image.open(tagged_png) as a, Image.open(upright_png) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_a_float_image_with_negative_values_is_scaled_by_its_range_not_clipped_at_0(tmp_path):
    # A zero-centred float image (e.g. a normalised export): -1 is black, 1 white, 0 mid-grey.
    values = np.tile(np.array([[-1.0, -0.5, 0.0, 0.5, 1.0], [1.0, 0.5, 0.0, -0.5, -1.0]], np.float32), (3, 2))
    Image.fromarray(values, mode="F").save(tmp_path / "signed.tif")
    expected = np.floor((values + 1) * 127.5).astype(np.uint8)  # 0, 63, 127, 191, 255
    assert_every_reader_sees(tmp_path / "signed.tif", expected, tmp_path)
    # A NaN pixel is black and does not stretch the range; a constant image is black.
    values[0, 1] = np.nan
    Image.fromarray(values, mode="F").save(tmp_path / "nan.tif")
    expected[0, 1] = 0
    assert np.array_equal(np.asarray(load_image(tmp_path / "nan.tif"))[..., 0], expected)
    Image.fromarray(np.full((4, 4), -3.0, dtype=np.float32), mode="F").save(tmp_path / "flat.tif")
    assert np.asarray(load_image(tmp_path / "flat.tif")).max() == 0


def test_a_float_image_on_the_unit_scale_is_brought_up_to_255_not_left_black(tmp_path):
    # Float images are usually written in [0, 1]; cast to 8 bits as they are, all would be black.
    values = np.tile(np.array([[0.0, 0.25, 0.5, 0.75, 1.0]], np.float32), (6, 2))
    Image.fromarray(values, mode="F").save(tmp_path / "unit.tif")
    assert_every_reader_sees(tmp_path / "unit.tif", np.floor(values * 255).astype(np.uint8), tmp_path)
    # Beyond 1 the values keep their 8-bit scale, as before.
    Image.fromarray(values * 200, mode="F").save(tmp_path / "byte.tif")
    assert_every_reader_sees(tmp_path / "byte.tif", np.floor(values * 200).astype(np.uint8), tmp_path)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    generate(
        root, Options(seed=2, train_studies=6, valid_studies=2, test_studies=2, image_size=32), workers=1
    )
    return root


def test_select_device_explains_a_typo_or_a_missing_gpu():
    assert select_device("cpu").type == "cpu"
    for typo in ("banana", "cuda:x", "meta"):
        with pytest.raises(ModelError, match="is not a device; expected cpu, cuda or cuda:N"):
            select_device(typo)
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="no GPU is available here"):
            select_device("cuda")


@pytest.mark.parametrize(
    "case, needle",
    [
        ("epochs 0", "--epochs must be at least 1"),
        ("workers -1", "--workers must be 0"),
        ("device banana", "--device 'banana' is not a device"),
        ("device cuda", "no GPU is available"),
        ("out is a file", "is a file; expected a folder"),
        ("pretrained csv", "is not a PyTorch state-dict file (or holds objects other than tensors)"),
        ("bundle a csv", "is not a PyTorch state-dict file (or holds objects other than tensors)"),
        ("bundle out in /proc", "cannot write bundle /proc/b"),
        ("bundle out under a file", "is a file, not a folder"),
        ("bundle over a bundle", "already holds a bundle"),
        ("cam out is a file", "is a file; expected a folder"),
        ("cam out in /proc", "cannot write --out"),
    ],
)
def test_user_errors_exit_3_with_one_line_and_no_traceback(tiny_data, tmp_path, case, needle):
    """The house rule: 3 for the caller's input (1 is a bug). Each case used to end in exit 1,
    a traceback, or torch's advice to load with weights_only=False."""
    if case == "device cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    if "/proc" in case and not Path("/proc/self").is_dir():
        pytest.skip("no /proc here")
    csv, b3 = str(tmp_path / "some.csv"), str(tmp_path / "b3")
    (tmp_path / "some.csv").write_text("a,b\n")
    (tmp_path / "b3").mkdir()
    (tmp_path / "b3" / "manifest.json").write_text("{}")
    train_args = ["train", str(tiny_data), "--out", str(tmp_path / "run"), "--arch", "densenet121"]
    cam_args = ["cam", str(tmp_path), "--bundle", b3, "--out"]
    args = {
        "epochs 0": [*train_args, "--epochs", "0"],
        "workers -1": [*train_args, "--workers", "-1"],
        "device banana": [*train_args, "--device", "banana"],
        "device cuda": [*train_args, "--device", "cuda"],
        "out is a file": ["train", str(tiny_data), "--out", csv],
        "pretrained csv": [*train_args, "--pretrained", csv],
        "bundle a csv": ["bundle", csv, "--out", str(tmp_path / "new-bundle")],
        "bundle out in /proc": ["bundle", csv, "--out", "/proc/b"],
        "bundle out under a file": ["bundle", csv, "--out", f"{csv}/b"],
        "bundle over a bundle": ["bundle", csv, "--out", b3],
        "cam out is a file": [*cam_args, csv],
        "cam out in /proc": [*cam_args, "/proc/cams"],
    }[case]
    result = CliRunner().invoke(cli, args)
    assert isinstance(result.exception, SystemExit) and result.exit_code == 3, result.output
    assert needle in result.output and "weights_only" not in result.output
    assert result.output.count("\n") == 1, result.output  # one line (a missing-weights warning aside)
    assert not (tmp_path / "run").exists() and not (tmp_path / "new-bundle").exists()


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_each_architecture_description_matches_torchvision(name):
    """One entry describes an architecture to the model, CAM, training and bundles: its ImageNet
    file is the one torchvision's downloader names, its head is the single output build_model
    put in, its feature maps are what that head sees averaged over space (so CAM's maps add up
    to the network's own logit), and its stride is how far they are downsampled."""
    import torchvision

    spec = ARCHITECTURES[name]
    weights = torchvision.models.get_model_weights(spec.name).IMAGENET1K_V1
    assert weights.url.rsplit("/", 1)[1] == spec.weights_file
    torch.manual_seed(0)
    model = build_model(name, pretrained=False).eval()
    linear = head(model, name)
    assert isinstance(linear, torch.nn.Linear) and linear.out_features == 1
    images = torch.randn(2, 3, 2 * spec.stride, 3 * spec.stride)
    with torch.no_grad():
        maps = feature_maps(model, name, images)
        assert maps.shape[1:] == (linear.in_features, 2, 3)
        torch.testing.assert_close(linear(maps.mean(dim=(2, 3))), model(images))
        assert feature_maps(model, name, images[..., : spec.stride, : spec.stride]).shape[2:] == (1, 1)


def test_an_unknown_architecture_names_the_known_ones(tmp_path):
    with pytest.raises(ModelError, match="unknown architecture 'resnet50'; expected one of densenet121"):
        build_model("resnet50", pretrained=False)
    with pytest.raises(ModelError, match="unknown architecture"):
        config(tmp_path, tmp_path / "run", arch="resnet50").check()
    with pytest.raises(TrainError, match=r"--image-size must be at least 32 \(densenet121 downsamples 32x\)"):
        config(tmp_path, tmp_path / "run", image_size=31).check()


@pytest.mark.parametrize("size", [32, 96, 224, 320])  # the tests', the demo's, the paper's, MuRAD's
def test_the_fast_decode_path_gives_the_training_transforms_tensor(tmp_path, size):
    """No train/serve skew: prediction's decode (PIL resize, numpy normalisation, HWC) and CAM's
    to_input give, for the same file, the tensor training's torchvision transform gives."""
    from reference_model.preprocess import decode, to_input, transform

    rng = np.random.default_rng(size)
    pictures = {
        "grey.png": Image.fromarray(rng.integers(0, 256, (512, 371), dtype=np.uint8)),  # shrunk
        "rgb.png": Image.fromarray(rng.integers(0, 256, (300, 512, 3), dtype=np.uint8)),
        "small.png": Image.fromarray(rng.integers(0, 256, (20, 27), dtype=np.uint8)),  # enlarged
        "i16.png": Image.fromarray(rng.integers(0, 65536, (200, 150), dtype=np.uint16)),
        "square.png": Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)),  # as is
    }
    training = transform(size, train=False)
    for name, picture in pictures.items():
        picture.save(tmp_path / name)
        fast = decode(tmp_path / name, size)
        assert fast.shape == (size, size, 3) and fast.dtype == np.float32
        expected = training(load_image(tmp_path / name)).permute(1, 2, 0).numpy()
        np.testing.assert_allclose(fast, expected, rtol=0, atol=1e-6, err_msg=name)
        assert np.array_equal(to_input(load_image(tmp_path / name), size), fast)


def test_validation_and_predict_call_a_study_by_one_rule():
    """Training's validation kappa uses predict's rule: the mean of the views, abnormal iff it
    is above 0.5 (a mean of exactly 0.5 is normal)."""
    from reference_model.aggregation import DEFAULT_THRESHOLD, study_label, study_probability
    from reference_model.training import study_kappa

    records = [
        ImageRecord("a1", "a/", "HAND", 1),
        ImageRecord("a2", "a/", "HAND", 1),  # a: (0.9 + 0.2) / 2 = 0.55 -> abnormal
        ImageRecord("b1", "b/", "HAND", 1),
        ImageRecord("b2", "b/", "HAND", 1),  # b: (0.75 + 0.25) / 2 = 0.5 -> normal
        ImageRecord("c1", "c/", "HAND", 0),  # c: 0.1 -> normal
    ]
    views = np.array([0.9, 0.2, 0.75, 0.25, 0.1], dtype=np.float32)
    assert DEFAULT_THRESHOLD == 0.5
    assert [study_label(study_probability(v)) for v in ([0.9, 0.2], [0.75, 0.25], [0.1])] == [1, 0, 0]
    # truth (1, 1, 0), predicted (1, 0, 0): kappa from the confusion counts
    assert study_kappa(records, views) == pytest.approx(
        float(cohen_kappa(*confusion_counts([1, 1, 0], [1, 0, 0])))
    )


def test_prediction_reads_a_grey_view_as_one_band_with_the_numbers_of_its_rgb_copy(tmp_path):
    """predict decodes a greyscale view (8- or 16-bit) without making it RGB first, resizing one
    band instead of three: the array the network gets is exactly that of the view's RGB copy,
    at a smaller size, the same size, and a larger one."""
    from reference_model.preprocess import decode, to_input

    rng = np.random.default_rng(3)
    grey = rng.integers(0, 256, size=(37, 53), dtype=np.uint8)
    deep = rng.integers(0, 65536, size=(37, 53)).astype(np.uint16)
    for name, pixels in (("grey.png", grey), ("deep.png", deep)):
        path = tmp_path / name
        Image.fromarray(pixels).save(path)
        assert load_image(path, keep_grey=True).mode == "L" and load_image(path).mode == "RGB"
        for size in (16, 53, 97):
            fast = decode(path, size)
            assert fast.shape == (size, size, 3) and fast.dtype == np.float32
            assert np.array_equal(fast, to_input(load_image(path), size)), (name, size)
