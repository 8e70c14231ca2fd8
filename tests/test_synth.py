"""`mura synth`: a MURA-v1.1-shaped tree of generated radiographs."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from reference_model import cpus, synth
from reference_model.synth import FULL_SIZE, MARKER, ROOT_NAME, SPLITS, Options, SynthError, generate, plan
from scorer.formats import read_gold, read_rows
from scorer.paths import STUDY_TYPES, normalize_study, study_of_image, study_type

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "real" / "MURA-v1.1"
SMALL = Options(seed=3, train_studies=150, valid_studies=40, test_studies=40, image_size=64, rgb_rate=0.1)
_LABEL_SUFFIX = re.compile(r"_(positive|negative)/?$")


def label_in_path(study: str) -> int | None:
    """The label MURA's folder names give away (`_positive` = 1, `_negative` = 0), if any."""
    match = _LABEL_SUFFIX.search(study.strip())
    if match is None:
        return None
    return 1 if match.group(1) == "positive" else 0


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    summary = generate(out, SMALL, workers=2)
    return out, summary


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_layout_and_index_files_match_the_files_on_disk(tree):
    out, summary = tree
    base = out / ROOT_NAME
    for split in SPLITS:
        images = lines(base / f"{split}_image_paths.csv")
        on_disk = sorted(str(p.relative_to(out)) for p in (base / split).rglob("*.png"))
        assert sorted(images) == on_disk
        assert len(images) == summary.images[split]
        labelled = lines(base / f"{split}_labeled_studies.csv")
        assert len(labelled) == summary.studies[split] == SMALL.studies(split)
        studies = {row.rsplit(",", 1)[0] for row in labelled}
        assert studies == {study_of_image(p) for p in images}
        for image in images:
            parts = image.split("/")
            assert parts[0] == ROOT_NAME and parts[1] == split
            assert study_type(image) in STUDY_TYPES
            assert parts[3].startswith("patient") and len(parts[3]) == len("patient") + 5
            assert parts[4].split("_")[0].startswith("study") and parts[5].startswith("image")
        for row in labelled:
            path, label = row.rsplit(",", 1)
            assert path.endswith("/") and normalize_study(path) == path
            assert label_in_path(path) == int(label)  # the folder suffix is the label
        # Views: 1 to 11 per study, contiguous image1..N.
        per_study = Counter(study_of_image(p) for p in images)
        assert min(per_study.values()) >= 1 and max(per_study.values()) <= 11
        for study, n in per_study.items():
            assert {p.rsplit("/", 1)[1] for p in images if p.startswith(study)} == {
                f"image{i}.png" for i in range(1, n + 1)
            }


def test_the_mix_of_the_real_data(tree):
    out, _ = tree
    base = out / ROOT_NAME
    studies = [row.rsplit(",", 1)[0] for s in SPLITS for row in lines(base / f"{s}_labeled_studies.csv")]
    assert {study_type(s) for s in studies} == set(STUDY_TYPES)
    patients = {s: {p.split("/")[3] for p in studies if p.split("/")[1] == s} for s in SPLITS}
    assert not (patients["train"] & patients["valid"]) and not (patients["train"] & patients["test"])
    assert not (patients["valid"] & patients["test"])
    # The same patientN/studyK_x folder under several study types, as in MURA.
    tails = Counter("/".join(s.split("/")[1:2] + s.split("/")[3:5]) for s in studies)
    assert any(n > 1 for n in tails.values())
    modes, sizes = Counter(), set()
    for path in lines(base / "train_image_paths.csv")[:300]:
        with Image.open(out / path) as image:
            modes[image.mode] += 1
            sizes.add(max(image.size))
            if image.mode == "RGB":
                r, g, b = image.split()
                assert r.tobytes() == g.tobytes() == b.tobytes()
    assert modes["L"] > modes["RGB"] > 0 and set(modes) == {"L", "RGB"}
    assert sizes == {SMALL.image_size}
    abnormal = sum(row.endswith(",1") for row in lines(base / "train_labeled_studies.csv"))
    assert 0.2 < abnormal / SMALL.train_studies < 0.55


def test_radiologists_strata_and_findings_are_consistent(tree):
    out, _ = tree
    base = out / ROOT_NAME
    for split in SPLITS:
        strata = dict(row.rsplit(",", 1) for row in lines(base / f"{split}_strata.csv"))
        labels = dict(row.rsplit(",", 1) for row in lines(base / f"{split}_labeled_studies.csv"))
        assert strata.keys() == labels.keys()
        for study, finding in strata.items():
            assert finding in {"normal", "fracture", "hardware", "degenerative", "other"}
            if finding == "normal":
                assert labels[study] == "0"
            elif finding != "degenerative":
                assert labels[study] == "1"  # only degenerative findings are missed by the labels
        boxes = [row.split(",") for row in lines(base / f"{split}_findings.csv")]
        shown = {study_of_image(b[0]) for b in boxes}
        assert shown == {s for s, f in strata.items() if f != "normal"}  # every abnormal study shows it
        for path, finding, *box in boxes:
            x0, y0, x1, y1 = map(int, box)
            assert finding == strata[study_of_image(path)]
            with Image.open(out / path) as image:
                assert 0 <= x0 < x1 < image.width and 0 <= y0 < y1 < image.height
    gold = read_gold(base / "test_radiologists.csv")
    assert gold.raters == tuple(f"Rad{i}" for i in range(1, 7)) and len(gold.studies) == SMALL.test_studies
    assert set(gold.studies) == set(dict(r.rsplit(",", 1) for r in lines(base / "test_labeled_studies.csv")))


def test_label_misses_only_on_degenerative_and_at_the_rate(tmp_path):
    options = Options(
        seed=1,
        train_studies=600,
        valid_studies=5,
        test_studies=5,
        image_size=32,
        abnormal_rate=1.0,
        label_miss_rate=0.5,
    )
    generate(tmp_path, options, workers=2)
    base = tmp_path / ROOT_NAME
    strata = dict(row.rsplit(",", 1) for row in lines(base / "train_strata.csv"))
    labels = dict(row.rsplit(",", 1) for row in lines(base / "train_labeled_studies.csv"))
    degenerative = [s for s, f in strata.items() if f == "degenerative"]
    missed = sum(labels[s] == "0" for s in degenerative)
    assert 0.35 < missed / len(degenerative) < 0.65
    assert all(labels[s] == "1" for s, f in strata.items() if f not in ("degenerative", "normal"))


def test_the_scorer_reads_the_radiologists_file(tree, tmp_path):
    out, _ = tree
    base = out / ROOT_NAME
    predictions = tmp_path / "output.csv"
    predictions.write_text("".join(f"{row}\n" for row in lines(base / "test_labeled_studies.csv")))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mura",
            "score",
            str(base / "test_radiologists.csv"),
            str(predictions),
            "--strata",
            str(base / "test_strata.csv"),
            "--resamples",
            "100",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["n_studies"] == SMALL.test_studies and len(result["radiologists"]) == 3


def _tree_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def test_the_same_seed_gives_the_same_bytes(tmp_path):
    options = Options(seed=5, train_studies=30, valid_studies=8, test_studies=8, image_size=48)
    generate(tmp_path / "a", options, workers=2)
    generate(tmp_path / "b", options, workers=1)
    generate(
        tmp_path / "c", Options(seed=6, train_studies=30, valid_studies=8, test_studies=8, image_size=48)
    )
    assert _tree_hash(tmp_path / "a") == _tree_hash(tmp_path / "b")
    assert _tree_hash(tmp_path / "a") != _tree_hash(tmp_path / "c")


def test_a_second_run_reuses_and_other_options_need_force(tmp_path):
    options = Options(train_studies=10, valid_studies=3, test_studies=3, image_size=32)
    generate(tmp_path, options)
    assert generate(tmp_path, options).reused
    bigger = Options(train_studies=12, valid_studies=3, test_studies=3, image_size=32)
    with pytest.raises(SynthError, match="--force"):
        generate(tmp_path, bigger)
    summary = generate(tmp_path, bigger, force=True)
    assert not summary.reused and summary.studies["train"] == 12
    assert len(lines(tmp_path / ROOT_NAME / "train_labeled_studies.csv")) == 12


def mura_synth(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mura", "synth", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )


def test_the_command_refuses_what_it_must_not_touch(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    # User errors exit 3 (the house rule; 1 is a bug): the old `!= 0` accepted a crash too.
    proc = mura_synth(tmp_path / "mine", "--train-studies", "5")
    assert (
        proc.returncode == 3 and "not made by `mura synth`" in proc.stderr and "Traceback" not in proc.stderr
    )
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]
    bad = [
        ("--train-studies", "0"),
        ("--image-size", "8"),
        ("--rater-error", "2"),
        ("--workers", "0"),
        ("--train-studies", "100000"),
    ]
    for args, needle in ((b, b[0]) for b in bad):
        proc = mura_synth(tmp_path / "new", *args)
        assert proc.returncode == 3 and needle in proc.stderr and "Traceback" not in proc.stderr
        assert proc.stderr.count("\n") == 1 and not (tmp_path / "new").exists()
    assert "use at most 99,999 studies" in proc.stderr
    if Path("/proc/self").is_dir():  # a folder nobody can create files in, even root
        proc = mura_synth("/proc/synth-tree", "--train-studies", "5")
        assert proc.returncode == 3 and "cannot write output folder /proc/synth-tree" in proc.stderr
    proc = mura_synth(
        tmp_path / "ok",
        "--train-studies",
        "6",
        "--valid-studies",
        "2",
        "--test-studies",
        "2",
        "--image-size",
        "32",
    )
    assert proc.returncode == 0 and "images/s" in proc.stdout


def test_the_full_size_plan_lays_patient_ids_out_from_the_split_sizes():
    """`--full` (MURA's 13,457 / 1,199 / 207 studies) used to run out of valid patient ids: the
    plan alone (no images) must fit, with each split's ids right after the previous split's."""
    options = Options(**{f"{s}_studies": FULL_SIZE[s] for s in SPLITS}, image_size=32)
    options.check()
    studies = plan(options)
    patients = {s: sorted({st.patient for st in studies if st.split == s}) for s in SPLITS}
    assert Counter(st.split for st in studies) == FULL_SIZE
    assert patients["train"][0] == 1
    for split in SPLITS:  # contiguous ranges: no id skipped
        assert patients[split] == list(range(patients[split][0], patients[split][-1] + 1))
    assert patients["valid"][0] == patients["train"][-1] + 1
    assert patients["test"][0] == patients["valid"][-1] + 1  # MURA's test patients follow valid's
    assert patients["test"][-1] <= synth.MAX_PATIENT


def test_the_patient_id_limit_in_the_message_is_one_that_fits(monkeypatch):
    """The message's limit is the real capacity: that many studies always plan (a patient has
    one or more studies), one more is refused before anything is written."""
    monkeypatch.setattr(synth, "MAX_PATIENT", 300)
    fits = Options(train_studies=200, valid_studies=60, test_studies=40, image_size=32)
    fits.check()
    assert max(s.patient for s in plan(fits)) <= 300
    with pytest.raises(SynthError, match="use at most 300 studies in all"):
        Options(train_studies=201, valid_studies=60, test_studies=40, image_size=32).check()


def test_a_corrupt_marker_is_a_clear_error_and_force_replaces_the_tree(tmp_path):
    options = Options(train_studies=4, valid_studies=2, test_studies=2, image_size=32)
    generate(tmp_path, options, workers=1)
    for broken in ("{half a record", "[1, 2]", "\xff\xfe"):
        (tmp_path / MARKER).write_text(broken, encoding="latin-1")
        with pytest.raises(SynthError, match=f"{MARKER} cannot be read.*--force"):
            generate(tmp_path, options)
    proc = mura_synth(
        tmp_path, "--train-studies", "4", "--valid-studies", "2", "--test-studies", "2", "--image-size", "32"
    )
    assert proc.returncode == 3 and "cannot be read" in proc.stderr and "Traceback" not in proc.stderr
    summary = generate(tmp_path, options, force=True, workers=1)
    assert not summary.reused and json.loads((tmp_path / MARKER).read_text())["complete"] is True


def test_workers_follow_the_cgroup_cpu_quota(tmp_path, monkeypatch):
    """synth's default workers and predict's threads come from one count, which honours a
    `docker --cpus` quota (os.cpu_count() reports the host's CPUs)."""
    monkeypatch.setattr(cpus, "CGROUP_V1", tmp_path / "no-v1")
    monkeypatch.setattr(cpus, "CGROUP_V2", tmp_path / "cpu.max")
    affinity = len(os.sched_getaffinity(0))
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cpus.cgroup_quota() is None and cpus.available_cpus() == affinity
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs: rounded up
    assert cpus.cgroup_quota() == 2
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert cpus.available_cpus() == 1 and synth.default_workers() == 1
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "no-v1").mkdir()
    (tmp_path / "no-v1" / "cpu.cfs_quota_us").write_text("300000\n")
    (tmp_path / "no-v1" / "cpu.cfs_period_us").write_text("100000\n")
    assert cpus.cgroup_quota() == 3
    from reference_model import infer

    assert infer.available_cpus is cpus.available_cpus  # one function for both


@pytest.mark.real_data
@pytest.mark.skipif(
    not (REAL / "valid_image_paths.csv").is_file(), reason="../shared/real is not on this machine"
)
def test_real_and_generated_index_files_read_the_same_way(tree):
    out, _ = tree
    for base in (REAL, out / ROOT_NAME):
        images = [
            row.fields[0]
            for row in read_rows(base / "valid_image_paths.csv", what="index", participant=False)
        ]
        labels = read_gold(base / "valid_labeled_studies.csv", what="labels file")
        assert labels.raters == ("label",)
        assert {study_of_image(p) for p in images} == set(labels.studies)
        assert all(label_in_path(s) == v for s, v in zip(labels.studies, labels.votes[:, 0]))
