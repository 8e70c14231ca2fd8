"""`mura codabench bundle`: the competition zip Codabench's v2 unpacker reads, and what it must
never hold (a label, a real study path, the map back)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from codabench_helpers import ENV, competition, make_bundle, mura, private_of, read_map, unpack
from harness_helpers import make_hidden_test

from scorer.codabench import bundle as bundle_module
from scorer.codabench import programs
from scorer.codabench.layout import COLUMNS
from scorer.formats import read_gold
from scorer.paths import GROUPS

N_TEST, N_VALID = 21, 9
# What compute_worker.py requires of a program folder, and the unpacker of a fact sheet question.
FACT_SHEET_FIELDS = {"key", "type", "title", "selection", "is_required", "is_on_leaderboard"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A hidden test set and a validation set (`study,label`), MURA-shaped paths with labels in
    them (`study1_positive`), images of random bytes, and strata for the test set."""
    root = tmp_path_factory.mktemp("codabench-data")
    test_dir, gold, studies = make_hidden_test(root / "test", n=N_TEST, seed=0)
    valid_dir, valid_six, _ = make_hidden_test(root / "valid", n=N_VALID, seed=1)
    table = read_gold(valid_six)
    valid_gold = root / "valid_labels.csv"
    valid_gold.write_text("".join(f"{s},{v[0]}\n" for s, v in zip(table.studies, table.votes)))
    strata = root / "strata.csv"
    strata.write_text("".join(f"{s},{'fracture' if i % 3 else 'normal'}\n" for i, s in enumerate(studies)))
    return {"test": test_dir, "gold": gold, "valid": valid_dir, "valid_gold": valid_gold, "strata": strata}


@pytest.fixture(scope="module")
def two_phases(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle-two") / "competition.zip"
    make_bundle(
        out,
        data["test"],
        data["gold"],
        "--valid",
        data["valid"],
        "--valid-gold",
        data["valid_gold"],
        "--strata",
        data["strata"],
        "--start",
        "2026-03-01",
        "--test-start",
        "2026-04-01",
        "--end",
        "2026-06-30",
        "--time-limit",
        900,
        "--max-submissions",
        30,
        "--max-submissions-per-day",
        3,
        "--gold-raters",
        "Rad2,Rad4,Rad6",
        "--resamples",
        500,
    )
    return out, unpack(out, out.parent / "unpacked")


@pytest.fixture(scope="module")
def on_worker(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle-worker") / "competition.zip"
    make_bundle(out, data["test"], data["gold"], "--data-on-worker", "--queue", "a1b2c3")
    return out, unpack(out, out.parent / "unpacked")


def zip_paths(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_competition_yaml_has_every_key_the_v2_unpacker_needs(two_phases):
    bundle, folder = two_phases
    with zipfile.ZipFile(bundle) as archive:
        names = set(archive.namelist())
    assert "competition.yaml" in names  # at the zip's root, not in a folder
    spec = competition(folder)
    assert spec["version"] == 2 and spec["title"]
    assert spec["docker_image"] == bundle_module.IMAGE and spec["enable_detailed_results"] is True
    assert spec["make_input_data_available"] is False  # the hidden set stays hidden
    named = [spec["image"], spec["terms"], *(page["file"] for page in spec["pages"])]
    for task in spec["tasks"]:
        named += [task[k] for k in ("scoring_program", "ingestion_program", "input_data", "reference_data")]
    named += [phase["starting_kit"] for phase in spec["phases"]]
    assert set(named) <= names, set(named) - names
    assert (folder / spec["image"]).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    for page in [spec["terms"], *(p["file"] for p in spec["pages"])]:
        assert (folder / page).read_text().strip(), page  # the unpacker refuses an empty page
    assert [p["title"] for p in spec["pages"]] == ["Overview", "Data", "Evaluation", "Submitting", "Terms"]

    # Tasks: unique indexes, each with a scoring program; every program folder has a command.
    indexes = [task["index"] for task in spec["tasks"]]
    assert len(set(indexes)) == len(indexes) == 2
    for task in spec["tasks"]:
        for kind in ("scoring_program", "ingestion_program"):
            meta = yaml_of(folder / Path(task[kind]).with_suffix("") / "metadata.yaml")
            assert isinstance(meta, dict) and meta.get("command"), (kind, meta)

    # Phases name tasks that exist, run one after the other, and carry the limits given.
    phases = spec["phases"]
    assert [p["name"] for p in phases] == ["Development", "Test"]
    assert all(set(p["tasks"]) <= set(indexes) for p in phases)
    assert phases[0]["end"] < phases[1]["start"]  # strictly: equal dates are refused
    assert (phases[0]["start"], phases[1]["start"], phases[1]["end"]) == (
        "2026-03-01 00:00:00",
        "2026-04-01 00:00:00",
        "2026-06-30 00:00:00",
    )
    for phase in phases:
        limits = ("execution_time_limit", "max_submissions", "max_submissions_per_day")
        assert [phase[k] for k in limits] == [900, 30, 3]

    # The plural key; Overall_Mean first; every official key a column; precision 3, highest first.
    assert "leaderboard" not in spec and len(spec["leaderboards"]) == 1
    columns = spec["leaderboards"][0]["columns"]
    assert columns[0]["key"] == "Overall_Mean" and columns[0]["index"] == 0
    assert [c["key"] for c in columns[: len(GROUPS)]] == [f"{g}_Mean" for g in GROUPS]
    assert {c["key"] for c in columns} == {f"{g}_{p}" for g in GROUPS for p in ("Mean", "Lower", "Upper")}
    assert all(c["precision"] == 3 and c["sorting"] == "desc" for c in columns)
    assert all(c["hidden"] == (not c["key"].endswith("_Mean")) for c in columns)
    assert len({c["index"] for c in columns}) == len({c["key"] for c in columns}) == len(columns)
    assert all(len(c["title"]) <= 36 and len(c["key"]) <= 36 and "-" not in c["title"] for c in columns)

    # The fact sheet as Codabench's serializer checks it, shown on the leaderboard.
    sheet = spec["fact_sheet"]
    assert set(sheet) == {"model", "institution", "link"}
    for key, question in sheet.items():
        assert set(question) == FACT_SHEET_FIELDS and question["key"] == key and question["type"] == "text"
        assert question["is_on_leaderboard"] == "true"  # a string: Codabench compares with 'true'


def yaml_of(path: Path):
    import yaml

    return yaml.safe_load(path.read_text())


def test_the_columns_are_the_keys_the_scoring_program_writes(two_phases, tmp_path):
    _, folder = two_phases
    ref = folder / "test_reference_data"
    gold = [line.split(",")[0] for line in (ref / "gold.csv").read_text().splitlines()[1:]]
    res = tmp_path / "input" / "res"
    res.mkdir(parents=True)
    (res / "output.csv").write_text("".join(f"{s},{i % 2}\n" for i, s in enumerate(gold)))
    (tmp_path / "input" / "ref").symlink_to(ref)
    proc = subprocess.run(
        [sys.executable, "-m", "scorer.codabench", str(tmp_path / "input"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    scores = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert set(scores) <= {c.key for c in COLUMNS} and "Overall_Mean" in scores
    assert json.loads((ref / "scoring.json").read_text()) == {
        "gold_raters": ["Rad2", "Rad4", "Rad6"],
        "seed": 0,
        "resamples": 500,
    }


def test_no_label_real_path_or_map_back_in_the_input_data_or_the_starting_kit(data, two_phases):
    bundle, folder = two_phases
    private = private_of(bundle)
    mapping = read_map(private / "test_map.csv")
    real = list(mapping.values()) + list(read_map(private / "valid_map.csv").values())
    assert len(mapping) == N_TEST and stat.S_IMODE(private.stat().st_mode) == 0o700
    forbidden = [b"_positive", b"_negative", b"anonymisation seed"]
    forbidden += [s.encode() for s in real] + [s.rstrip("/").rsplit("/", 2)[-2].encode() for s in real]
    shipped = {
        "test_input_data": [b"patient", b"MURA-v1.1"],
        "valid_input_data": [b"patient", b"MURA"],
        "starting_kit": [],
    }
    for name, more in shipped.items():
        for path in (folder / name).rglob("*"):
            if path.is_file():
                blob = path.relative_to(folder).as_posix().encode() + b"\n" + path.read_bytes()
                found = [f for f in forbidden + more if f in blob]
                assert not found, (path, found)
    # Nothing in the zip at all holds the map back (its real paths), the private files included.
    with zipfile.ZipFile(bundle) as archive:
        names = [n for n in archive.namelist() if not n.endswith("_input_data.zip")]  # (checked above)
        everything = b"".join(archive.read(n) for n in names)
    assert not any(s.encode() in everything for s in real)
    assert not {"test_map.csv", "map.csv"} & {Path(p).name for p in zip_paths(folder)}

    # The input data is input.csv and the images, nothing else: every image byte for byte the
    # original's, listed and zipped in case order, each entry with the one fixed time.
    inputs = folder / "test_input_data"
    listed = (inputs / "input.csv").read_text().splitlines()
    assert zip_paths(inputs) == {"input.csv", *listed}
    assert all(re.fullmatch(r"test/XR_[A-Z]+/case\d{4}/image\d+\.png", p) for p in listed)
    cases = [int(p.split("/")[2][4:]) for p in listed]
    assert cases == sorted(cases) and sorted(set(cases)) == list(range(1, N_TEST + 1))
    for path in listed:
        study = path.rsplit("/", 1)[0] + "/"
        original = data["test"] / mapping[study] / Path(path).name
        assert (inputs / path).read_bytes() == original.read_bytes()
    with zipfile.ZipFile(folder / "test_input_data.zip") as archive:
        infos = archive.infolist()
    assert [i.filename for i in infos] == ["input.csv", *listed]
    assert {i.date_time for i in infos} == {programs.ZIP_TIME}
    assert {i.external_attr >> 16 for i in infos} == {0o100444}


def test_the_reference_data_is_the_gold_in_the_anonymised_names(data, two_phases):
    bundle, folder = two_phases
    mapping = read_map(private_of(bundle) / "test_map.csv")
    anonymised = read_gold(folder / "test_reference_data" / "gold.csv")
    real = read_gold(data["gold"])
    assert anonymised.raters == real.raters
    votes = {s: tuple(v) for s, v in zip(real.studies, real.votes)}
    assert {s: tuple(v) for s, v in zip(anonymised.studies, anonymised.votes)} == {
        case: votes[mapping[case]] for case in anonymised.studies
    }
    assert (private_of(bundle) / "test_gold.csv").read_text() == (
        folder / "test_reference_data" / "gold.csv"
    ).read_text()
    lines = (private_of(bundle) / "test_strata.csv").read_text().splitlines()
    strata = dict(line.split(",") for line in lines)
    given = dict(line.split(",") for line in data["strata"].read_text().splitlines())
    assert strata == {case: given[mapping[case]] for case in strata} and len(strata) == N_TEST


def test_the_starting_kit_has_the_contract_and_no_weights(two_phases):
    _, folder = two_phases
    kit = folder / "starting_kit"
    assert zip_paths(kit) == {"README.md", "submission/predict.py"}
    assert (kit / "submission" / "predict.py").read_bytes() == bundle_module.PREDICT.read_bytes()
    readme = (kit / "README.md").read_text()
    assert "mura train" in readme and "mura bundle" in readme and "zip -r" in readme


def test_the_pages_state_the_contract_limits_and_baseline(two_phases):
    _, folder = two_phases
    submitting = (folder / "pages" / "submitting.md").read_text()
    assert "python3 predict.py input.csv output.csv" in submitting and "MURA_PROBABILITIES" in submitting
    assert "870 s" in submitting and "900 s" in submitting  # predict.py's share of the phase's limit
    evaluation = (folder / "pages" / "evaluation.md").read_text()
    assert "Rad2, Rad4, Rad6" in evaluation and "500 resamples" in evaluation
    assert all(f"| {r} |" in evaluation for r in ("Rad1", "Rad3", "Rad5"))  # the baseline radiologists
    data_page = (folder / "pages" / "data.md").read_text()
    assert f"| **All** | {N_TEST} |" in data_page and f"| **All** | {N_VALID} |" in data_page


def test_data_on_worker_leaves_the_images_out_and_says_which_folder_each_worker_holds(on_worker):
    bundle, folder = on_worker
    with zipfile.ZipFile(bundle) as archive:
        outer = archive.namelist()
    images = [p for p in zip_paths(folder) if p.endswith(".png") and p != "logo.png"]
    assert not images and not any(p.endswith(".png") and p != "logo.png" for p in outer)
    spec = json.loads((folder / "test_input_data" / "worker_data.json").read_text())
    listed = (folder / "test_input_data" / "input.csv").read_text().splitlines()
    assert set(spec["images"]) == set(listed)
    held = bundle.with_name("competition.worker-data") / spec["folder"]
    for path, digest in spec["images"].items():
        assert hashlib.sha256((held / path).read_bytes()).hexdigest() == digest
    assert zip_paths(held) == set(listed)  # the images only: no input.csv, no map
    assert spec["folder"] in (folder / "README.md").read_text()
    command = yaml_of(folder / "ingestion_program" / "metadata.yaml")["command"]
    assert "--worker-data /app/data" in command
    assert competition(folder)["queue"] == "a1b2c3"


def test_solution_is_zipped_with_predict_py_at_its_root_and_a_large_one_warns(data, tmp_path, monkeypatch):
    solution = tmp_path / "solution"
    (solution / "bundle").mkdir(parents=True)
    (solution / "predict.py").write_text("print('hi')\n")
    (solution / "bundle" / "weights.bin").write_bytes(os.urandom(4096))
    monkeypatch.setattr(bundle_module, "SOLUTION_WARNING", 1000)
    made = bundle_module.build(
        bundle_module.Options(data["test"], data["gold"], tmp_path / "c.zip", solution=solution)
    )
    assert made.warnings and "stall" in made.warnings[0]
    folder = unpack(made.zip, tmp_path / "unpacked")
    assert zip_paths(folder / "solution") == {"predict.py", "bundle/weights.bin"}
    assert competition(folder)["solutions"] == [{"index": 0, "path": "solution.zip", "tasks": [0]}]


@pytest.mark.parametrize(
    "options, needle",
    [
        (["--valid", "VALID", "--valid-gold", "VALID_GOLD"], "give --test-start"),
        (["--start", "2026-05-01", "--end", "2026-04-01"], "--end 2026-04-01 is not after the start"),
        (["--start", "2026-13-01"], "--start: expected an ISO 8601 date"),
        (["--gold-raters", "Rad1,Rad9,Rad2"], "--gold-raters names Rad9"),
        (["--time-limit", "2"], "--time-limit: expected at least"),
        (["--solution", "TEST"], "expected a submission folder with predict.py"),
        (["--valid", "VALID"], "--valid and --valid-gold go together"),
    ],
    ids=["no test start", "end before", "bad date", "unknown rater", "time limit", "solution", "half valid"],
)
def test_an_organiser_error_is_one_line_and_writes_nothing(data, tmp_path, options, needle):
    names = {"VALID": data["valid"], "VALID_GOLD": data["valid_gold"], "TEST": data["test"]}
    options = [str(names.get(o, o)) for o in options]
    proc = mura(
        "codabench",
        "bundle",
        "--test",
        data["test"],
        "--gold",
        data["gold"],
        "--out",
        tmp_path / "c.zip",
        *options,
    )
    assert proc.returncode == 3 and "Traceback" not in proc.stderr, proc.stderr
    assert needle in proc.stderr.strip().splitlines()[-1], proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_missing_image_folder_or_an_existing_bundle_is_refused_before_anything_is_written(data, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    proc = mura("codabench", "bundle", "--test", broken, "--gold", data["gold"], "--out", tmp_path / "c.zip")
    assert proc.returncode == 3 and "found none for 21 of 21 studies" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken"]

    (tmp_path / "c.private").mkdir()  # an earlier bundle's map back: never overwritten
    proc = mura(
        "codabench", "bundle", "--test", data["test"], "--gold", data["gold"], "--out", tmp_path / "c.zip"
    )
    assert proc.returncode == 3 and "c.private already exists" in proc.stderr
    assert not (tmp_path / "c.zip").exists() and list((tmp_path / "c.private").iterdir()) == []


def test_the_scoring_program_zip_holds_only_what_it_imports_and_runs_from_it_alone(tmp_path):
    out = tmp_path / "scoring_program.zip"
    proc = mura("codabench", "scoring-program", out)
    assert proc.returncode == 0, proc.stderr
    with zipfile.ZipFile(out) as archive:
        names = archive.namelist()
        archive.extractall(tmp_path / "program")
    assert names[0] == "metadata.yaml"
    assert "scorer/codabench/__init__.py" in names and "scorer/pipeline.py" in names
    assert not [n for n in names if n.startswith(("scorer/harness", "scorer/leaderboard"))], names
    assert out.read_bytes() == programs.scoring_program()  # the bundle's own, byte for byte

    # Run where the worker runs it: its folder as the working directory, no kit on the path.
    import example_data

    test = example_data.make_test(n=30, seed=3)
    (tmp_path / "input" / "ref").mkdir(parents=True)
    (tmp_path / "input" / "res").mkdir()
    example_data.write_gold(tmp_path / "input" / "ref" / "gold.csv", test)
    example_data.write_predictions(tmp_path / "input" / "res" / "output.csv", test.studies, list(test.truth))
    command = yaml_of(tmp_path / "program" / "metadata.yaml")["command"].split()
    assert command[:3] == ["python3", "-m", "scorer.codabench"]
    # `python3 -m` from the program's folder, reporting which files its scorer modules came from
    # (the kit installed here must not stand in for a module the zip lacks).
    probe = (
        "import os, runpy, sys\nsys.path.insert(0, os.getcwd())\nsys.argv[0] = 'scorer.codabench'\n"
        "try:\n    runpy.run_module('scorer.codabench', run_name='__main__', alter_sys=True)\n"
        "except SystemExit as stop:\n    print('EXIT', stop.code)\n"
        "print('FILES', *sorted({m.__file__ for n, m in sys.modules.items() if n.split('.')[0] == 'scorer'}))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    args = [sys.executable, "-c", probe, str(tmp_path / "input"), str(tmp_path / "output")]
    proc = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path / "program", env=env, timeout=99)
    assert "EXIT 0" in proc.stdout, proc.stdout + proc.stderr
    files = proc.stdout.split("FILES", 1)[1].split()
    assert files and all(Path(f).is_relative_to(tmp_path / "program") for f in files), files
    assert json.loads((tmp_path / "output" / "scores.json").read_text())["Overall_Mean"] == 1.0


REAL = Path(__file__).resolve().parents[2] / "shared" / "real"  # as test_score_real_data finds it


@pytest.mark.real_data
@pytest.mark.skipif(not (REAL / "images").is_dir(), reason="the real MURA images (../shared/real) are absent")
def test_real_mura_studies_bundle_with_their_bytes_and_no_label_in_a_name(tmp_path):
    images = sorted((REAL / "images" / "MURA-v1.1").rglob("*.png"))
    studies = [p.parent.relative_to(REAL / "images").as_posix() + "/" for p in images]
    index = (REAL / "MURA-v1.1" / "valid_labeled_studies.csv").read_text().split()
    labels = dict(line.split(",") for line in index)
    gold = tmp_path / "gold.csv"
    gold.write_text("".join(f"{study},{labels[study]}\n" for study in dict.fromkeys(studies)))
    out = make_bundle(tmp_path / "c.zip", REAL / "images", gold)
    folder = unpack(out, tmp_path / "unpacked")
    listed = (folder / "test_input_data" / "input.csv").read_text().splitlines()
    mapping = read_map(private_of(out) / "test_map.csv")
    assert len(listed) == len(studies) and set(mapping.values()) == set(studies)
    for path in listed:
        assert "positive" not in path and "patient" not in path
        original = REAL / "images" / mapping[path.rsplit("/", 1)[0] + "/"] / Path(path).name
        assert (folder / "test_input_data" / path).read_bytes() == original.read_bytes()
