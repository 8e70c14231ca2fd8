"""The anonymised test input: no label and no patient in any path, nothing in names, order,
times or inodes that says which study is which; the map back stays private. Checked from
outside (the staged tree) and from inside each sandbox (a submission that looks around)."""

from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path

import example_data
import pytest
from harness_helpers import RUNNERS, copy_submission, make_hidden_test, runner_or_skip, tree_digest

from scorer.errors import HostError
from scorer.formats import read_gold
from scorer.harness.anonymise import FIXED_MTIME, MAP_NAME, anonymise, study_images
from scorer.harness.evaluate import Submission, evaluate
from scorer.harness.sandbox import Limits, MiB
from scorer.paths import STUDY_TYPES
from scorer.settings import Settings

ANONYMISED_IMAGE = re.compile(r"^/data/test/XR_[A-Z]+/case\d{4}/image\d+\.png$")


def stage(tmp_path, n=40, seed=None, sort_by_label=False):
    hidden, gold, _ = make_hidden_test(tmp_path, n=n)
    if sort_by_label:  # the worst case: a gold file listing every abnormal study first
        lines = sorted(gold.read_text().splitlines(), key=lambda line: "_negative" in line)
        gold.write_text("".join(f"{line}\n" for line in lines))
    table = read_gold(gold)
    staged = anonymise(hidden, table, tmp_path / "data", tmp_path / "private", seed)
    return hidden, gold, table, staged


def test_paths_carry_no_label_no_patient_and_no_study_number(tmp_path):
    _, _, table, staged = stage(tmp_path)
    lines = (staged.data / "input.csv").read_text().splitlines()
    found = study_images(tmp_path / "hidden", table)
    assert len(lines) == staged.images == sum(len(images) for images in found.values())
    assert all(ANONYMISED_IMAGE.match(line) for line in lines), lines[:3]
    for path in staged.data.rglob("*"):
        relative = path.relative_to(staged.data).as_posix()
        assert not re.search(r"positive|negative|patient|study", relative), relative
    # Each anonymised study keeps its study type (the participant needs it) and maps back to one real study.
    assert sorted(staged.real.values()) == sorted(table.studies)
    for anonymised, real in staged.real.items():
        assert anonymised.split("/")[3] == real.split("/")[2]  # XR_TYPE


def test_the_bytes_staged_under_each_case_are_that_real_studys_images(tmp_path):
    # An oracle of its own: the gold file's studies and their image files on disk, matched to the
    # staged cases by content alone; the harness's map must then agree with it.
    hidden, gold, _, staged = stage(tmp_path, n=40)
    studies = [line.split(",")[0] for line in gold.read_text().splitlines()]
    originals = {study: images_of(hidden / study) for study in studies}
    cases = sorted({path.parent for path in staged.data.rglob("image*.png")})
    assert len(cases) == len(studies)
    found: dict[str, str] = {}
    for case in cases:
        staged_bytes = images_of(case)
        matches = [study for study, images in originals.items() if images == staged_bytes]
        assert len(matches) == 1, (case, matches)  # the images are random: one study each
        assert matches[0] not in found
        assert case.parent.name == matches[0].split("/")[2]  # the study type is kept
        found[matches[0]] = f"/data/{case.relative_to(staged.data).as_posix()}/"
    assert {study: anonymised for anonymised, study in staged.real.items()} == found
    rows = (tmp_path / "private" / MAP_NAME).read_text().splitlines()[2:]
    assert {row.split(",")[1]: row.split(",")[0] for row in rows} == found


def images_of(folder: Path) -> list[bytes]:
    """The bytes of a folder's images, image1 first (natural order: image2 before image10)."""
    files = sorted(folder.glob("image*.png"), key=lambda path: int(path.stem.removeprefix("image")))
    return [path.read_bytes() for path in files]


def test_the_case_order_is_shuffled_even_when_the_gold_file_is_sorted_by_label(tmp_path):
    _, _, _, staged = stage(tmp_path, n=40, sort_by_label=True)
    labels = ["_positive" in staged.real[key] for key in sorted(staged.real)]  # in case-number order
    assert labels != sorted(labels, reverse=True)  # abnormal-first order would give the labels away
    assert 0 < sum(labels) < len(labels)


def test_the_secret_seed_makes_a_different_order_each_time_and_is_kept_in_the_private_map(tmp_path):
    orders = []
    for i in range(2):
        _, _, _, staged = stage(tmp_path / str(i), n=40)
        orders.append([staged.real[key] for key in sorted(staged.real)])
        first = (tmp_path / str(i) / "private" / MAP_NAME).read_text().splitlines()[0]
        assert first == f"# anonymisation seed {staged.seed}"
    assert orders[0] != orders[1]
    # A given seed reproduces the same staging.
    _, _, _, again = stage(tmp_path / "again", n=40, seed=7)
    _, _, _, same = stage(tmp_path / "same", n=40, seed=7)
    assert again.real == same.real


def test_times_modes_and_inodes_say_nothing(tmp_path):
    hidden, _, _, staged = stage(tmp_path)
    originals = {p.stat().st_ino for p in hidden.rglob("*.png")}
    entries = [staged.data, *staged.data.rglob("*")]
    assert {p.stat().st_mtime for p in entries} == {FIXED_MTIME}
    assert {oct(p.stat().st_mode & 0o777) for p in entries if p.is_dir()} == {"0o555"}
    assert {oct(p.stat().st_mode & 0o777) for p in entries if p.is_file()} == {"0o444"}
    copies = [p for p in entries if p.suffix == ".png"]
    assert all(p.stat().st_nlink == 1 for p in copies)  # copies, not hard links to the originals
    assert not originals & {p.stat().st_ino for p in copies}


def test_the_map_back_is_only_in_the_private_folder(tmp_path):
    _, _, table, staged = stage(tmp_path)
    private = tmp_path / "private"
    assert oct(private.stat().st_mode & 0o777) == "0o700"
    assert (private / MAP_NAME).read_text().count("\n") == len(table.studies) + 2
    for path in staged.data.rglob("*"):
        if path.is_file():
            text = path.read_bytes()
            assert b"MURA-v1.1" not in text and b"patient" not in text


def test_a_gold_study_without_images_is_the_organisers_error(tmp_path):
    hidden, gold, studies = make_hidden_test(tmp_path, n=10)
    for image in (hidden / studies[3]).iterdir():
        image.unlink()
    expected = r"found none for 1 of 10 studies: .*pass the folder that holds MURA-v1.1/"
    with pytest.raises(HostError, match=expected):
        anonymise(hidden, read_gold(gold), tmp_path / "data", tmp_path / "private")


def test_a_studys_views_are_staged_in_every_format_the_model_reads_and_nothing_else_is(tmp_path):
    # One list of image suffixes (scorer.paths) for the harness and the reference model: a test
    # set of TIFFs or bitmaps is staged, not refused as a set of studies without images.
    hidden, gold, studies = make_hidden_test(tmp_path, n=4)
    folder = hidden / studies[0]
    for image in folder.iterdir():
        image.unlink()
    for name in ("image1.tif", "image2.BMP", "image3.webp", "notes.txt", "image4.dcm"):
        (folder / name).write_bytes(name.encode())
    staged = anonymise(hidden, read_gold(gold), tmp_path / "data", tmp_path / "private")
    case = next(anon for anon, real in staged.real.items() if real == studies[0])
    views = sorted(p.name for p in (staged.data / case.removeprefix("/data/")).iterdir())
    assert views == ["image1.tif", "image2.bmp", "image3.webp"]
    assert [(staged.data / case.removeprefix("/data/") / view).read_bytes() for view in views] == [
        b"image1.tif",
        b"image2.BMP",
        b"image3.webp",
    ]


@pytest.mark.required_in_ci
@pytest.mark.parametrize("runner_name", RUNNERS)
def test_from_inside_the_sandbox_no_label_is_reachable(runner_name, tmp_path):
    runner = runner_or_skip(runner_name)
    hidden, gold, studies = make_hidden_test(tmp_path / "organiser", n=14)
    example_data.write_gold(tmp_path / "organiser" / "unused.csv", example_data.make_test(n=3))
    run = tmp_path / "organiser" / f"run-{uuid.uuid4().hex[:6]}"
    # What must stay invisible: each real study's folder, the organiser's folders.
    needles = [s.split("/", 3)[3] for s in studies] + [str(hidden), str(run / "private")]
    targets = [gold, hidden / studies[0] / "image1.png", run / "private" / MAP_NAME, hidden]
    submission = copy_submission(
        "inspector",
        tmp_path / "participant",
        {"needles.txt": "\n".join(needles), "targets.txt": "\n".join(map(str, targets + [SECRET]))},
    )
    # A root-owned 0700 folder inside a mounted path: only root could read it.
    (submission / "secret").mkdir(mode=0o700)
    (submission / "secret" / "key.txt").write_text("the organiser's secret\n")
    before = tree_digest(hidden, gold)
    limits = Limits(timeout=300, memory=1024 * MiB, pids=64)
    eve = Submission(submission, "eve")
    verdict = evaluate(eve, hidden, gold, run, runner, limits, Settings(resamples=50))

    assert verdict.ok, verdict.reason
    report = inspector_report(run / "log.txt")
    assert report["paths"] > 100  # it did look around
    assert report["named"] == [] and report["contents"] == []
    assert set(report["opened"].values()) <= {"FileNotFoundError", "PermissionError"}, report["opened"]
    assert report["opened"][SECRET] == "PermissionError"
    assert report["uid"] != 0
    # Unprivileged on the host, not only inside a namespace: no host root, no capability, no
    # sysctl that a crash or the kernel would act on, no user namespace to regain root inside.
    assert report["host_uid"] not in (None, 0), report["host_uid"]
    assert set(report["capabilities"].values()) == {"0000000000000000"}, report["capabilities"]
    assert report["no_new_privs"] == "1"
    assert len(report["sysctls"]) == 3  # EACCES, or EROFS (OSError) where /proc/sys is read-only first
    assert set(report["sysctls"].values()) <= {"PermissionError", "OSError"}, report["sysctls"]
    assert report["user_namespace"] == "refused"
    # The CPU topology is there to read, as in a container: OpenVINO crashes without it.
    assert report["cpu_topology"] is True
    data = report["data"]
    images = [path for path in data if path.endswith(".png")]
    assert len(images) == sum(1 for _ in hidden.rglob("*.png"))
    assert all(ANONYMISED_IMAGE.match(path) for path in images)
    assert {entry["mtime"] for entry in data.values()} == {FIXED_MTIME}
    assert set(report["listing"]) <= {f"XR_{t}" for t in STUDY_TYPES}
    assert tree_digest(hidden, gold) == before
    assert not os.path.exists(run / "sandbox")  # the staged data and /output are gone


SECRET = "/submission/secret/key.txt"


def inspector_report(log: Path) -> dict:
    lines = [line for line in log.read_text().splitlines() if line.startswith("REPORT ")]
    assert len(lines) == 1, log.read_text()[-2000:]
    return json.loads(lines[0].removeprefix("REPORT "))


def test_a_real_study_path_holding_a_comma_survives_the_map_back(tmp_path):
    # Paths are quoted as RFC 4180 says in every CSV the harness writes (map.csv, predictions.csv):
    # split on the comma, the map back and the scored predictions would name other studies.
    import csv

    from scorer.formats import PREDICTIONS, read_predictions
    from scorer.harness.evaluate import write_real

    hidden = tmp_path / "hidden"
    studies = [f"MURA-v1.1/test/XR_WRIST/patient{i},x/study1_positive/" for i in (1, 2)]
    for study in studies:
        (hidden / study).mkdir(parents=True)
        (hidden / study / "image1.png").write_bytes(b"\x89PNG" + study.encode())
    gold = tmp_path / "gold.csv"
    gold.write_text("".join(f'"{study}",1,0,1\n' for study in studies))
    staged = anonymise(hidden, read_gold(gold), tmp_path / "data", tmp_path / "private")
    with (tmp_path / "private" / MAP_NAME).open(newline="") as handle:
        rows = [row for row in csv.reader(handle) if not row[0].startswith("#")][1:]
    assert sorted(real for _, real in rows) == studies
    answer = tmp_path / "output.csv"
    answer.write_text("".join(f"{case},1\n" for case in staged.studies))
    write_real(staged, answer, tmp_path / "predictions.csv", PREDICTIONS)
    assert sorted(p.written for p in read_predictions(tmp_path / "predictions.csv")) == studies
