"""`mura evaluate`'s pipeline: a good submission is scored exactly as `mura score` would score
its mapped-back answer, its log is kept within the cap, the answer is collected safely, and
the organiser's own mistakes are host errors that record nothing."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from harness_helpers import RUNNERS, copy_submission, make_hidden_test, runner_or_skip, tree_digest

from scorer import pipeline
from scorer.errors import HostError
from scorer.files import file_sha256
from scorer.harness import bwrap_runner, cli, docker_runner, seccomp
from scorer.harness.evaluate import Submission, evaluate, folder_sha256
from scorer.harness.runners import choose_runner
from scorer.harness.sandbox import GiB, Limits, MemoryCap, MiB
from scorer.leaderboard.store import open_store
from scorer.pipeline import score_files
from scorer.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
HOSTILE_WELL = ROOT / "tests" / "hostile" / "well_behaved"
SETTINGS = Settings(resamples=200)
LIMITS = Limits(timeout=60, memory=512 * MiB, pids=64, log_cap=16 * 1024)


@pytest.fixture(scope="module")
def hidden(tmp_path_factory):
    return make_hidden_test(tmp_path_factory.mktemp("hidden"), n=21)


def any_runner():
    """bubblewrap if it is here, else docker: for tests of what every runner shares."""
    if bwrap_runner.unavailable_reason() is None:
        return runner_or_skip("bwrap")
    return runner_or_skip("docker")


def inline_submission(folder: Path, code: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "predict.py").write_text(code)
    return folder


ANSWER = (
    "import sys\n"
    "from pathlib import Path\n"
    "images = [l for l in Path(sys.argv[1]).read_text().splitlines() if l]\n"
    "studies = dict.fromkeys(i.rpartition('/')[0] + '/' for i in images)\n"
)


@pytest.mark.required_in_ci
@pytest.mark.unprivileged
@pytest.mark.parametrize("runner_name", RUNNERS)
def test_a_good_submission_is_scored_on_its_mapped_back_answer_and_recorded(runner_name, hidden, tmp_path):
    runner = runner_or_skip(runner_name)
    test_dir, gold, studies = hidden
    submission = copy_submission("well_behaved", tmp_path)
    db = tmp_path / "board.sqlite"
    entry = Submission(submission, "bob", model="odd cases", institution="Uni", submitted="2018-11-30")
    verdict = evaluate(entry, test_dir, gold, tmp_path / "run", runner, LIMITS, SETTINGS, db=db)

    assert verdict.ok, verdict.reason
    # Which real study each case is, from the bytes the submission saw (not from the harness's
    # map): each case's images must be exactly one gold study's images, in order.
    log = (tmp_path / "run" / "log.txt").read_text().splitlines()
    seen = {line.split()[1]: line.split()[2:] for line in log if line.startswith("saw ")}
    case_of = cases_by_bytes(seen, test_dir, gold)
    assert sorted(case_of) == sorted(studies)
    # well_behaved says abnormal for odd case numbers.
    expected = {real: int(case.rstrip("/")[-1]) % 2 for real, case in case_of.items()}
    mapped = dict(line.split(",") for line in (tmp_path / "run" / "predictions.csv").read_text().splitlines())
    assert {k: int(v) for k, v in mapped.items()} == expected
    # The private map says the same.
    rows = (tmp_path / "run" / "private" / "map.csv").read_text().splitlines()[2:]
    assert dict(reversed(row.split(",")) for row in rows) == case_of
    independent = tmp_path / "independent.csv"
    independent.write_text("".join(f"{study},{value}\n" for study, value in expected.items()))
    reference = score_files(gold, independent, SETTINGS)
    assert verdict.result["Overall_Mean"] == reference["Overall_Mean"]
    assert verdict.result["model"] == reference["model"]
    assert (
        json.loads((tmp_path / "run" / "result.json").read_text())["Overall_Mean"]
        == reference["Overall_Mean"]
    )
    assert (tmp_path / "run" / "score.html").is_file()
    # The raw answer is kept privately; the sandbox's own folder (data, /output) is gone.
    assert (tmp_path / "run" / "private" / "output.csv").is_file()
    assert not (tmp_path / "run" / "sandbox").exists()
    assert log[-1] == f"wrote {len(studies)} studies" and len(log) == len(studies) + 1
    outcome = json.loads((tmp_path / "run" / "outcome.json").read_text())
    assert outcome["status"] == "scored" and outcome["run"]["runner"] == runner_name
    with open_store(db) as store:
        assert store.query("SELECT submitter, model, status, kappa, content_sha256 FROM submissions") == [
            ("bob", "odd cases", "scored", reference["Overall_Mean"], folder_sha256(submission))
        ]


def cases_by_bytes(seen: dict[str, list[str]], test_dir: Path, gold: Path) -> dict[str, str]:
    """real study -> the case whose images' hashes (`seen`: case -> hashes, in input order) are
    exactly that study's image files under `test_dir`, in natural order (image2 before image10).
    The gold studies are read from the gold file's first column; every case must match one."""
    studies = [line.split(",")[0] for line in gold.read_text().splitlines() if line.strip()]

    def natural(path: Path) -> list:
        return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]

    def digests(study: str) -> list[str]:
        files = sorted((test_dir / study).glob("*.png"), key=natural)
        return [hashlib.sha256(path.read_bytes()).hexdigest() for path in files]

    hashes = {study: digests(study) for study in studies}
    found: dict[str, str] = {}
    for case, views in seen.items():
        matches = [study for study, images in hashes.items() if images == views]
        assert len(matches) == 1, (case, matches)
        assert matches[0] not in found, f"two cases show {matches[0]}"
        found[matches[0]] = case
    return found


@pytest.mark.required_in_ci
@pytest.mark.unprivileged
@pytest.mark.parametrize("runner_name", RUNNERS)
def test_a_long_log_is_capped_to_its_head_and_tail_and_the_run_still_counts(runner_name, hidden, tmp_path):
    runner = runner_or_skip(runner_name)
    test_dir, gold, _ = hidden
    code = ANSWER + (
        "for i in range(100_000):\n    print(f'progress line {i}')\n"
        "Path(sys.argv[2]).write_text(''.join(f'{s},0\\n' for s in studies))\n"
        "print('THE END', file=sys.stderr)\n"
    )
    submission = inline_submission(tmp_path / "chatty", code)
    verdict = evaluate(
        Submission(submission, "c"), test_dir, gold, tmp_path / "run", runner, LIMITS, SETTINGS
    )

    assert verdict.ok, verdict.reason
    log = (tmp_path / "run" / "log.txt").read_text()
    total = sum(len(f"progress line {i}\n") for i in range(100_000)) + len("THE END\n")
    assert verdict.outcome.log_bytes == total
    assert log.startswith("progress line 0\nprogress line 1\n")
    assert log.rstrip().endswith("THE END")
    dropped = total - LIMITS.log_cap
    assert (
        f"[... {dropped:,} bytes of output dropped: the log keeps the first and the last 8,192 bytes ...]"
        in log
    )
    assert len(log) - len(log.splitlines()[0]) < LIMITS.log_cap + 200


@pytest.mark.required_in_ci
@pytest.mark.unprivileged
@pytest.mark.parametrize(
    "trick",
    [
        "os.symlink('/data/input.csv', sys.argv[2])",
        "os.mkfifo(sys.argv[2])",
        "os.mkdir(sys.argv[2])",
    ],
)
def test_output_that_is_not_a_plain_file_is_refused_without_reading_it(trick, hidden, tmp_path):
    test_dir, gold, _ = hidden
    submission = inline_submission(tmp_path / "tricky", f"import os, sys\n{trick}\n")
    verdict = evaluate(
        Submission(submission, "t"), test_dir, gold, tmp_path / "run", any_runner(), LIMITS, SETTINGS
    )
    assert (
        verdict.reason
        == "/output/output.csv is not a regular file (a link, folder or pipe); write a plain CSV file"
    )


@pytest.mark.required_in_ci
@pytest.mark.unprivileged
@pytest.mark.parametrize("runner_name", RUNNERS)
def test_what_a_submission_leaves_in_output_is_removed_and_an_unreadable_answer_is_a_failure(
    runner_name, hidden, tmp_path
):
    # Whoever the organiser is (root, or not: run again as one by tests/test_harness_organiser.py),
    # a private answer is read, a locked folder in /output removed, and an answer its owner
    # cannot read (mode 000) is the submission's recorded failure, never the harness's traceback.
    runner = runner_or_skip(runner_name)
    test_dir, gold, _ = hidden
    leaves = ANSWER + (
        "import os\n"
        "Path(sys.argv[2]).write_text(''.join(f'{s},1\\n' for s in studies))\n"
        "os.chmod(sys.argv[2], 0o600)\n"
        "os.makedirs('/output/cache/deeper')\n"
        "Path('/output/cache/deeper/weights.bin').write_bytes(b'x')\n"
        "for path in ('/output/cache/deeper/weights.bin', '/output/cache/deeper', '/output/cache'):\n"
        "    os.chmod(path, 0)\n"
    )
    careless = inline_submission(tmp_path / "careless", leaves)
    db = tmp_path / "board.sqlite"
    run = tmp_path / "r1"
    verdict = evaluate(Submission(careless, "c"), test_dir, gold, run, runner, LIMITS, SETTINGS, db=db)
    assert verdict.ok, verdict.reason
    assert not (tmp_path / "r1" / "sandbox").exists()

    locked = inline_submission(tmp_path / "locked", leaves + "os.chmod(sys.argv[2], 0)\n")
    run = tmp_path / "r2"
    verdict = evaluate(Submission(locked, "l"), test_dir, gold, run, runner, LIMITS, SETTINGS, db=db)
    assert verdict.reason == (
        "/output/output.csv has mode 000, which its owner cannot read; write it with the usual permissions "
        "(e.g. 644)"
    )
    assert not (tmp_path / "r2" / "sandbox").exists()
    with open_store(db) as store:
        assert store.query("SELECT submitter, status, reason FROM submissions ORDER BY id") == [
            ("c", "scored", None),
            ("l", "failed", verdict.reason),
        ]


@pytest.mark.required_in_ci
@pytest.mark.unprivileged
def test_invalid_optional_probabilities_fail_the_submission_and_valid_ones_add_auc(hidden, tmp_path):
    test_dir, gold, studies = hidden
    code = ANSWER + (
        "Path(sys.argv[2]).write_text(''.join(f'{s},1\\n' for s in studies))\n"
        "import os\n"
        "Path(os.environ['MURA_PROBABILITIES']).write_text(''.join(f'{s},{P}\\n' for s in studies))\n"
    )
    good = inline_submission(tmp_path / "good", code.replace("{P}", "0.75"))
    verdict = evaluate(
        Submission(good, "g"), test_dir, gold, tmp_path / "run-good", any_runner(), LIMITS, SETTINGS
    )
    assert verdict.ok, verdict.reason
    assert 0.0 <= verdict.result["roc"]["auc"] <= 1.0 or verdict.result["roc"]["auc"] is None
    mapped = (tmp_path / "run-good" / "probabilities.csv").read_text().splitlines()
    assert sorted(line.split(",")[0] for line in mapped) == sorted(studies)

    bad = inline_submission(tmp_path / "bad", code.replace("{P}", "1.5"))
    verdict = evaluate(
        Submission(bad, "b"), test_dir, gold, tmp_path / "run-bad", any_runner(), LIMITS, SETTINGS
    )
    assert verdict.reason.startswith(
        "/output/probabilities.csv (optional, but invalid): probabilities file: "
    )


def test_a_submission_without_predict_py_is_a_recorded_failure_and_nothing_runs(hidden, tmp_path):
    test_dir, gold, _ = hidden
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "model.pt").write_bytes(b"weights")

    class NeverRun:
        name = "never"

        def check(self, limits):
            pass

        def memory_cap(self):
            return MemoryCap(True, "never runs")

        def visible(self, submission):
            return [submission]

        def run(self, *args):
            raise AssertionError("the sandbox must not run")

    db = tmp_path / "board.sqlite"
    verdict = evaluate(
        Submission(empty, "dan"), test_dir, gold, tmp_path / "run", NeverRun(), LIMITS, SETTINGS, db=db
    )
    assert verdict.reason.startswith("the submission has no predict.py at its root")
    with open_store(db) as store:
        assert store.query("SELECT submitter, status, reason FROM submissions") == [
            ("dan", "failed", verdict.reason)
        ]


def mura(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "mura", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env
    )


@pytest.mark.parametrize(
    "break_it, message",
    [
        (
            lambda h, g, s: g.write_text("not,a,gold\nfile,x,y\n"),
            r"^organiser error: gold file .*expected 0 or 1",
        ),
        (
            lambda h, g, s: [p.unlink() for p in (h / s[0]).iterdir()],
            r"^organiser error: test folder .*found none for 1 of",
        ),
        (
            lambda h, g, s: (h.parent / "no-such").mkdir(),
            r"^organiser error: --test .*no-such is not a folder",
        ),
    ],
    ids=["bad gold", "missing images", "no test folder"],
)
def test_the_organisers_mistakes_exit_3_and_record_nothing(break_it, message, tmp_path):
    hidden, gold, studies = make_hidden_test(tmp_path, n=7)
    break_it(hidden, gold, studies)
    if (tmp_path / "no-such").exists():
        (tmp_path / "no-such").rmdir()
        hidden = tmp_path / "no-such"
    db = tmp_path / "board.sqlite"
    submission = copy_submission("well_behaved", tmp_path / "s")
    before = tree_digest(submission)
    proc = mura(
        "evaluate",
        submission,
        "--test",
        hidden,
        "--gold",
        gold,
        "--db",
        db,
        "--out",
        tmp_path / "run",
        cwd=tmp_path,
    )
    assert proc.returncode == 3, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert re.search(message, proc.stderr), proc.stderr
    if db.exists():
        with open_store(db) as store:
            assert store.query("SELECT COUNT(*) FROM submissions") == [(0,)]
    assert tree_digest(submission) == before


def test_an_out_folder_that_is_not_empty_is_refused(hidden, tmp_path):
    test_dir, gold, _ = hidden
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "result.json").write_text("{}")
    proc = mura(
        "evaluate",
        HOSTILE_WELL,
        "--test",
        test_dir,
        "--gold",
        gold,
        "--no-record",
        "--out",
        tmp_path / "run",
        cwd=tmp_path,
    )
    assert proc.returncode == 3
    assert "already exists and is not empty" in proc.stderr
    assert (tmp_path / "run" / "result.json").read_text() == "{}"


@pytest.mark.required_in_ci
def test_mura_evaluate_exits_2_for_a_failed_submission_and_0_for_a_scored_one(hidden, tmp_path):
    test_dir, gold, _ = hidden
    runner = "bwrap" if bwrap_runner.unavailable_reason() is None else "docker"
    any_runner()  # skips (CI: fails) when neither is here
    image = os.environ.get("MURA_TEST_IMAGE", "mura-evaluation:test")
    common = (
        "--test",
        test_dir,
        "--gold",
        gold,
        "--db",
        tmp_path / "b.sqlite",
        "--runner",
        runner,
        "--image",
        image,
        "--resamples",
        100,
    )
    crashed = mura(
        "evaluate", ROOT / "tests" / "hostile" / "crash", *common, "--out", tmp_path / "r1", cwd=tmp_path
    )
    assert crashed.returncode == 2
    assert (
        "submission failed (" in crashed.stderr
        and "RuntimeError: the model file is corrupt" in crashed.stderr
    )
    scored = mura("evaluate", HOSTILE_WELL, *common, "--out", tmp_path / "r2", cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr
    assert "Overall" in scored.stdout and "recorded on" in scored.stdout


def test_auto_picks_docker_when_an_engine_answers_else_bubblewrap_else_says_what_to_install(monkeypatch):
    monkeypatch.setattr(docker_runner, "unavailable_reason", lambda: None)
    assert cli.choose_runner("auto", "img").name == "docker"
    monkeypatch.setattr(docker_runner, "unavailable_reason", lambda: "no Docker engine answers (x)")
    monkeypatch.setattr(bwrap_runner, "unavailable_reason", lambda: None)
    assert cli.choose_runner("auto", "img").name == "bwrap"
    monkeypatch.setattr(bwrap_runner, "unavailable_reason", lambda: "bubblewrap (bwrap) is not installed")
    with pytest.raises(HostError, match=r"no sandbox .*start a Docker engine .*apt-get install bubblewrap"):
        cli.choose_runner("auto", "img")


def test_the_demos_choice_passes_over_an_engine_without_the_image_and_says_so(monkeypatch):
    # `make demo` asks for docker only with the evaluation image (needs_image); `mura evaluate
    # --runner auto` takes the engine and lets the docker runner say the image is missing.
    monkeypatch.setattr(docker_runner, "unavailable_reason", lambda: None)
    monkeypatch.setattr(docker_runner, "has_image", lambda image: image == "img")
    monkeypatch.setattr(bwrap_runner, "unavailable_reason", lambda: None)
    notes = []
    assert choose_runner("auto", "img", needs_image=True, say=notes.append).name == "docker" and not notes
    assert choose_runner("auto", "other", needs_image=True, say=notes.append).name == "bwrap"
    assert notes == ["a Docker engine answers but has no other (`make image`): using bubblewrap"]
    assert choose_runner("auto", "other").name == "docker"
    monkeypatch.setattr(bwrap_runner, "unavailable_reason", lambda: "bubblewrap (bwrap) is not installed")
    with pytest.raises(HostError, match=r"no sandbox .*: the Docker engine has no other .*, and bubblewrap"):
        choose_runner("auto", "other", needs_image=True)


def test_the_docker_command_line_holds_every_guarantee(tmp_path):
    limits = Limits(timeout=9, memory=GiB, cpus=1.5, pids=99)
    args = docker_runner.docker_arguments(
        "n1", "img:t", tmp_path / "s", tmp_path / "d", tmp_path / "o", limits
    )
    text = " ".join(args)
    for flag in (
        "--init",
        "--network none",
        "--read-only",
        "--cap-drop ALL",
        "--security-opt no-new-privileges",
        "--pull never",
        "--log-driver none",
        f"--memory {GiB}",
        f"--memory-swap {GiB}",
        "--cpus 1.5",
        "--pids-limit 99",
        "--user 1000:1000",
        "--entrypoint timeout",
    ):
        assert flag in text, flag
    assert f"source={tmp_path / 'd'},target=/data,readonly" in text
    assert f"source={tmp_path / 's'},target=/submission,readonly" in text
    assert f"source={tmp_path / 'o'},target=/output" in text and "--gpus" not in args
    # The contract, under a deadline of the container's own past the harness's (9 s + grace),
    # its stderr on stdout (one pipe: the log keeps the order it was written in).
    deadline = str(math.ceil(9 + docker_runner.CONTAINER_GRACE))
    assert args[-12:] == [
        "img:t",
        "-s",
        "KILL",
        deadline,
        "sh",
        "-c",
        'exec "$@" 2>&1',
        "sh",
        "python3",
        "predict.py",
        "/data/input.csv",
        "/output/output.csv",
    ]
    with_gpus = docker_runner.docker_arguments("n", "i", tmp_path, tmp_path, tmp_path, Limits(gpus="all"))
    assert with_gpus[with_gpus.index("--gpus") + 1] == "all"


@pytest.mark.parametrize(
    "text, size", [("512m", 512 * MiB), ("8g", 8 * GiB), ("1.5G", 3 * GiB // 2), ("4096", 4096)]
)
def test_sizes_are_read_as_docker_spells_them(text, size):
    assert cli.parse_size(text, "--memory") == size


def test_a_size_that_is_not_one_is_the_organisers_error():
    with pytest.raises(HostError, match="expected a size such as 512m"):
        cli.parse_size("lots", "--memory")


def test_a_files_hash_is_read_in_chunks_and_is_the_whole_files(tmp_path):
    # One helper for the scorer's input hashes and the submission's content hash.
    content = os.urandom(3 * 1000 + 7)
    bundle = tmp_path / "bundle.bin"
    bundle.write_bytes(content)
    expected = hashlib.sha256(content).hexdigest()
    assert file_sha256(bundle, chunk=1000) == expected == pipeline.file_sha256(bundle)


def test_the_submission_hash_covers_names_and_contents_and_ignores_bytecode(tmp_path):
    a = copy_submission("well_behaved", tmp_path / "a")
    b = copy_submission("well_behaved", tmp_path / "b")
    assert folder_sha256(a) == folder_sha256(b)
    (b / "__pycache__").mkdir()
    (b / "__pycache__" / "x.pyc").write_bytes(b"x")
    assert folder_sha256(a) == folder_sha256(b)
    (b / "bundle.bin").write_bytes(b"w")
    assert folder_sha256(a) != folder_sha256(b)


def organisers_paths_inside(submission: Path, hidden, tmp_path: Path) -> dict[str, list]:
    """Each of the organiser's paths put inside (or around) the submission: option -> arguments."""
    test_dir, gold, _ = hidden
    inside = submission / "organiser"
    inside.mkdir()
    shutil.copy(gold, inside / "gold.csv")
    shutil.copytree(test_dir, inside / "hidden")
    run = tmp_path / "run"
    return {
        "--out": ["--test", test_dir, "--gold", gold, "--out", inside / "run", "--no-record"],
        "--db": ["--test", test_dir, "--gold", gold, "--out", run, "--db", inside / "b.sqlite"],
        "--gold": ["--test", test_dir, "--gold", inside / "gold.csv", "--out", run, "--no-record"],
        "--test": ["--test", inside / "hidden", "--gold", gold, "--out", run, "--no-record"],
        "--strata": ["--test", test_dir, "--gold", gold, "--strata", inside / "gold.csv", "--out", run],
    }


def test_a_run_folder_inside_the_submission_is_refused_before_anything_runs(hidden, tmp_path):
    # `cd submission && mura evaluate .`: the default run folder (evaluations/...) would lie
    # inside the submission, and with it the map back, which read_map would find and score with.
    test_dir, gold, _ = hidden
    submission = copy_submission("read_map", tmp_path)
    before = tree_digest(submission)
    proc = mura(
        "evaluate",
        ".",
        "--test",
        test_dir,
        "--gold",
        gold,
        "--no-record",
        "--runner",
        "bwrap",
        cwd=submission,
    )
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    out = r"evaluations/read_map-\d+T\d+Z"
    expected = rf"^organiser error: --out {out} lies inside the submission {submission}, "
    assert re.match(expected, proc.stderr), proc.stderr
    assert "run `mura evaluate` from another folder or pass another --out (nothing was run)" in proc.stderr
    assert tree_digest(submission) == before  # no evaluations/ folder, nothing run


@pytest.mark.parametrize("option", ["--out", "--db", "--gold", "--test", "--strata"])
def test_every_organisers_path_inside_the_submission_is_refused(option, hidden, tmp_path):
    submission = copy_submission("read_map", tmp_path)
    args = organisers_paths_inside(submission, hidden, tmp_path)[option]
    proc = mura("evaluate", submission, *args, "--runner", "bwrap", cwd=tmp_path)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    folder = re.escape(str(submission))
    expected = rf"^organiser error: {option} {folder}/organiser/\S+ lies inside the submission {folder}, "
    assert re.match(expected + "which the sandbox can read; ", proc.stderr), proc.stderr
    assert not (tmp_path / "run").exists() and not (submission / "organiser" / "run").exists()


def test_a_submission_inside_the_organisers_test_folder_is_refused(hidden, tmp_path):
    test_dir, gold, _ = hidden
    submission = copy_submission("well_behaved", test_dir / "uploads")
    try:
        proc = mura(
            "evaluate",
            submission,
            "--test",
            test_dir,
            "--gold",
            gold,
            "--no-record",
            "--out",
            tmp_path / "run",
            "--runner",
            "bwrap",
            cwd=tmp_path,
        )
    finally:
        shutil.rmtree(test_dir / "uploads")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert f"--test {test_dir} holds the submission {submission}; keep the organiser's files" in proc.stderr
    assert not (tmp_path / "run").exists()


NO_IMAGE = (
    r"^organiser error: (the docker runner is unavailable: .*|the evaluation image nope:latest is not in "
    r"the Docker engine; build it with `make image`.*)$"
)


@pytest.mark.parametrize(
    "options, message",
    [
        (["--submitted", "yesterday"], r"^organiser error: submission date: "),
        (["--link", "notalink"], r"^organiser error: link: expected an http:// or https:// address"),
        (["--runner", "docker", "--image", "nope:latest"], NO_IMAGE),
    ],
    ids=["date", "link", "image"],
)
def test_a_bad_leaderboard_field_or_a_missing_sandbox_stops_before_anything_is_written(
    options, message, hidden, tmp_path
):
    test_dir, gold, _ = hidden
    run, db = tmp_path / "run", tmp_path / "board.sqlite"
    runner = [] if "--runner" in options else ["--runner", "bwrap"]
    proc = mura(
        "evaluate",
        HOSTILE_WELL,
        "--test",
        test_dir,
        "--gold",
        gold,
        "--db",
        db,
        "--out",
        run,
        *runner,
        *options,
        cwd=tmp_path,
    )
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and re.match(message, proc.stderr), proc.stderr
    assert not run.exists()  # nothing ran, no map back was written: a corrected retry can use --out
    assert not db.exists()  # a refused run leaves no empty store behind either


@pytest.mark.required_in_ci
@pytest.mark.parametrize("where", ["/proc/mura-run", "{gold}/run"], ids=["proc", "under a file"])
def test_a_run_folder_that_cannot_be_made_is_the_organisers_error(where, hidden, tmp_path):
    runner_or_skip("bwrap")  # the sandbox is checked before the run folder is made
    test_dir, gold, _ = hidden
    out = where.format(gold=gold)
    proc = mura(
        "evaluate",
        HOSTILE_WELL,
        "--test",
        test_dir,
        "--gold",
        gold,
        "--no-record",
        "--out",
        out,
        "--runner",
        "bwrap",
        cwd=tmp_path,
    )
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    why = r"\((No such file or directory|Not a directory)\)"
    expected = rf"^organiser error: --out {re.escape(out)} cannot be made {why}; choose a new folder in a "
    assert re.match(expected + r"writable place$", proc.stderr), proc.stderr


@pytest.mark.required_in_ci
def test_too_many_files_in_output_fail_the_submission_even_with_a_valid_answer(hidden, tmp_path):
    test_dir, gold, _ = hidden
    code = ANSWER + (
        "Path(sys.argv[2]).write_text(''.join(f'{s},0\\n' for s in studies))\n"
        "for i in range(100):\n    Path(f'/output/extra{i}.txt').write_text('x')\n"
    )
    submission = inline_submission(tmp_path / "littering", code)
    limits = Limits(timeout=60, memory=512 * MiB, pids=64, log_cap=16 * 1024, output_files=50)
    run = tmp_path / "run"
    verdict = evaluate(Submission(submission, "l"), test_dir, gold, run, any_runner(), limits, SETTINGS)
    assert verdict.reason == (
        "stopped: wrote more than 1,024 MiB or 50 files to /output; write only output.csv (and "
        "probabilities.csv) there"
    )
    assert not (run / "sandbox").exists() and not (run / "predictions.csv").exists()


def test_a_leaderboard_file_that_is_not_a_store_stops_before_anything_runs(hidden, tmp_path):
    test_dir, gold, _ = hidden
    db = tmp_path / "board.sqlite"
    db.write_text("these are not the results you are looking for\n")
    run = tmp_path / "run"
    args = ("--test", test_dir, "--gold", gold, "--db", db, "--out", run)
    proc = mura("evaluate", HOSTILE_WELL, *args, cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.startswith("organiser error: ") and str(db) in proc.stderr
    assert db.read_text() == "these are not the results you are looking for\n"
    assert not (run / "log.txt").exists()


@pytest.mark.required_in_ci
def test_gpus_are_for_the_docker_runner_only(hidden, tmp_path):
    runner = runner_or_skip("bwrap")
    with pytest.raises(HostError, match="--gpus needs the docker runner"):
        runner.run(HOSTILE_WELL, tmp_path, tmp_path, Limits(gpus="all"))


def test_bubblewrap_binds_an_interpreter_under_tmp_after_mounting_the_sandboxs_own_tmp(monkeypatch, tmp_path):
    # A CI clone keeps its virtual environment under /tmp: a later tmpfs on /tmp would hide it.
    venv = "/tmp/ci/main/.venv"
    monkeypatch.setattr(bwrap_runner, "python_binds", lambda: [venv])
    for uid in (None, 1_610_612_737):
        args = bwrap_runner.sandbox_arguments(
            tmp_path / "s", tmp_path / "d", tmp_path / "o", Limits(), "run-x", uid, 9
        )
        tmpfs = [i for i, a in enumerate(args) if a == "--tmpfs"]
        bind = args.index(venv)
        assert args[bind - 1] == "--ro-bind" and all(i < bind for i in tmpfs)
        # Its parent folders are made 0755 (the dropped user must pass them), after the tmpfs.
        made = args.index("/tmp/ci/main")
        assert args[made - 3 : made] == ["--perms", "0755", "--dir"] and all(i < made for i in tmpfs)
        assert args[args.index("--proc") :][:5] == ["--proc", "/proc", "--ro-bind", "/proc/sys", "/proc/sys"]
        assert args[args.index("--seccomp") + 1] == "9"
        assert args[-4:] == [sys.executable, "predict.py", "/data/input.csv", "/output/output.csv"]
        assert "--network" not in args


def test_bubblewrap_as_root_drops_to_the_runs_own_uid_and_otherwise_uses_a_user_namespace(tmp_path):
    paths = (tmp_path / "s", tmp_path / "d", tmp_path / "o")
    root = bwrap_runner.sandbox_arguments(*paths, Limits(), "run-x", 1_610_612_737, None)
    # No user namespace: bwrap could only map the sandbox's user onto root's uid.
    assert "--unshare-user" not in root and "--unshare-all" not in root
    for flag in (
        "--unshare-net",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--die-with-parent",
        "--new-session",
    ):
        assert flag in root, flag
    drop = root[root.index("setpriv") : -4]
    assert drop == [
        "setpriv",
        "--reuid=1610612737",
        "--regid=1610612737",
        "--clear-groups",
        "--no-new-privs",
        "--bounding-set=-all",
        "--inh-caps=-all",
        "--",
    ]
    assert root.index("--chdir") < root.index("setpriv")  # bwrap's own options all come first
    user = bwrap_runner.sandbox_arguments(*paths, Limits(), "run-x", None, None)
    assert "setpriv" not in user and "--seccomp" not in user
    for flag in ("--unshare-all", "--unshare-user", "--disable-userns", "--cap-drop"):
        assert flag in user, flag
    assert user[user.index("--uid") + 1] == "65534"
    assert bwrap_runner.SANDBOX_UIDS.start > 65535  # never a uid a distribution hands out


def test_the_seccomp_filter_is_made_for_the_machines_it_knows(tmp_path):
    for machine in ("x86_64", "aarch64"):
        program = seccomp.program(machine)
        assert program and len(program) % 8 == 0  # struct sock_filter: 8 bytes each
    assert seccomp.program("riscv64") is None
