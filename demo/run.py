"""`make demo`: the whole competition on generated data, one `mura` command at a time.

    python demo/run.py [--out demo-output] [--size small|tiny] [--submission submission]

synth -> train a small ensemble -> bundle into the submission folder -> evaluate it in a sandbox
on the anonymised hidden test set, scored against the generated radiologists (with the hidden
strata) -> the leaderboard (Markdown and HTML) -> class activation maps. Each step prints the
command it runs, so the demo doubles as a walk-through. A second run reuses what the first made:
each step is skipped when its output is complete (delete the output folder to start over).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from reference_model.synth import MARKER as SYNTH_MARKER
from scorer.harness.docker_runner import EVALUATION_IMAGE

ROOT = Path(__file__).resolve().parents[1]
MURA = "MURA-v1.1"

# "small" is the demo: minutes on a 2-core CPU, an ensemble that learns the generated findings
# (kappa well above 0.5 on the generated test set) and still misses some subtle degenerative ones,
# which the stratified report shows. The test set is larger than MURA's 207 studies so that the
# ~65 degenerative studies in it give the flag the power to fire: with 150 test studies (18 of
# them) the same ensemble's gap of -0.13 had an interval reaching past 0 on one of our VMs.
# "tiny" is the test suite's: seconds, the same steps, no claim that it learns.
# Measured: bench/README.md ("make demo").
SIZES = {
    "small": dict(
        train=400,
        valid=80,
        test=600,
        image=96,
        arch="densenet121",
        epochs=4,
        members=2,
        batch=16,
        lr=1e-3,
        resamples=10_000,
    ),
    "tiny": dict(
        train=12,
        valid=6,
        test=12,
        image=48,
        arch="densenet121",
        epochs=1,
        members=2,
        batch=8,
        lr=1e-3,
        resamples=200,
    ),
}
LINK = "https://stanfordmlgroup.github.io/competitions/mura/"


def mura(*args: object) -> None:
    command = [sys.executable, "-m", "mura", *map(str, args)]
    print(f"\n$ mura {shlex.join(command[3:])}", flush=True)
    code = subprocess.run(command, cwd=ROOT).returncode
    if code != 0:
        sys.exit(f"demo: `mura {args[0]}` failed (exit {code}); see its message above")


def shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def skip(what: str, path: Path) -> None:
    print(f"\n# {what}: reusing {shown(path)}", flush=True)


def run_complete(run: Path, epochs: int) -> bool:
    log = run / "log.jsonl"
    if not (run / "best.pt").is_file() or not log.is_file():
        return False
    lines = log.read_text().splitlines()
    return bool(lines) and json.loads(lines[-1]).get("epoch") == epochs


def sandbox() -> str:
    """docker when an engine answers and has the evaluation image, else bubblewrap (installed with
    apt where it is missing and that is possible)."""
    from scorer.errors import HostError
    from scorer.harness.runners import choose_runner

    try:
        return choose_runner(
            "auto", EVALUATION_IMAGE, needs_image=True, say=lambda note: print(f"# {note}")
        ).name
    except HostError as exc:
        if shutil.which("bwrap") is None and install_bubblewrap():
            return sandbox()  # once more, now that bubblewrap is there
        sys.exit(f"demo: {exc.message}")


def install_bubblewrap() -> bool:
    """apt-get install bubblewrap, where that is possible (root, Debian/Ubuntu)."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return False
    print("\n# installing bubblewrap, the sandbox the evaluation runs the submission in", flush=True)
    install = ["apt-get", "install", "-y", "-qq", "bubblewrap"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(install, env=env).returncode != 0:  # an old package list: update it once
        subprocess.run(["apt-get", "update", "-qq"], env=env)
        subprocess.run(install, env=env)
    return shutil.which("bwrap") is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "demo-output")
    parser.add_argument("--size", choices=SIZES, default="small")
    parser.add_argument("--submission", type=Path, default=ROOT / "submission")
    args = parser.parse_args()
    size = SIZES[args.size]
    out = args.out.resolve()
    submission = args.submission.resolve()
    data = out / "data"
    start = time.perf_counter()

    data_time = make_data(data, size)
    runs = train_members(data, out / "runs", size, data_time)
    bundle = submission / "bundle"
    bundle_members(runs, bundle)
    board = out / "leaderboard.sqlite"
    evaluation = out / "evaluation"
    evaluate(submission, data, evaluation, board, size, data_time)
    render_leaderboard(board, out)
    cams = out / "cams"
    draw_cams(data, bundle, cams)

    kappa = json.loads((evaluation / "result.json").read_text())["Overall_Mean"]
    seconds = time.perf_counter() - start
    print(f"\nThe demo took {seconds:.0f} s; the submission's kappa: {kappa:.3f}. Its outputs:")
    for what, path in (
        ("generated data (the hidden test set and its radiologists)", data / MURA),
        ("training runs (config, per-epoch log, checkpoints)", out / "runs"),
        ("the submission (predict.py + bundle)", submission),
        ("the evaluation run (log, outcome, mapped-back predictions)", evaluation),
        ("  the score report, with the hidden strata", evaluation / "score.html"),
        ("  the private map back from the anonymised test input", evaluation / "private" / "map.csv"),
        ("the leaderboard store", board),
        ("the leaderboard (Markdown)", out / "leaderboard.md"),
        ("the leaderboard (HTML)", out / "leaderboard.html"),
        ("class activation maps", cams),
    ):
        print(f"  {what:62s} {shown(path)}")


def make_data(data: Path, size: dict) -> float:
    """1. The data: a MURA-shaped tree with six generated radiologists and each study's finding.
    Returns when it was made: synth reuses a tree made with the same options and replaces one
    made with others (an older demo's), and what was made from an older tree is made again."""
    mura(
        "synth",
        data,
        "--train-studies",
        size["train"],
        "--valid-studies",
        size["valid"],
        "--test-studies",
        size["test"],
        "--image-size",
        size["image"],
        "--seed",
        0,
        "--force",
    )
    return (data / SYNTH_MARKER).stat().st_mtime


def train_members(data: Path, runs_dir: Path, size: dict, data_time: float) -> list[Path]:
    """2. The participant trains a small ensemble: the same recipe, different seeds."""
    runs = []
    for i in range(size["members"]):
        run = runs_dir / f"member-{i}"
        runs.append(run)
        if (run / "config.json").is_file() and (run / "config.json").stat().st_mtime < data_time:
            shutil.rmtree(run)  # trained on an earlier data tree
        if run_complete(run, size["epochs"]):
            skip(f"training member {i}", run)
            continue
        resume = ["--resume"] if (run / "last.pt").is_file() else []
        mura(
            "train",
            data,
            "--out",
            run,
            "--arch",
            size["arch"],
            "--image-size",
            size["image"],
            "--epochs",
            size["epochs"],
            "--batch-size",
            size["batch"],
            "--lr",
            size["lr"],
            "--seed",
            i,
            *resume,
        )
    return runs


def bundle_members(runs: list[Path], bundle: Path) -> None:
    """3. ... and bundles it into the submission folder, beside predict.py."""
    manifest = bundle / "manifest.json"
    newest = max((run / "best.pt").stat().st_mtime for run in runs)
    if manifest.is_file() and manifest.stat().st_mtime > newest:
        skip("the bundle", bundle)
    else:
        mura("bundle", *runs, "--out", bundle, "--force")


def evaluate(
    submission: Path, data: Path, evaluation: Path, board: Path, size: dict, data_time: float
) -> None:
    """4. The organiser evaluates it: anonymised hidden test set, sandbox, score, leaderboard."""
    result = evaluation / "result.json"
    made = max((submission / "bundle" / "manifest.json").stat().st_mtime, data_time)
    if result.is_file() and result.stat().st_mtime > made:
        skip("the evaluation", evaluation)
        return
    shutil.rmtree(evaluation, ignore_errors=True)
    model = f"{size['arch'].replace('densenet', 'DenseNet-')} x{size['members']} (demo)"
    mura(
        "evaluate",
        submission,
        "--test",
        data,
        "--gold",
        data / MURA / "test_radiologists.csv",
        "--strata",
        data / MURA / "test_strata.csv",
        "--out",
        evaluation,
        "--db",
        board,
        "--runner",
        sandbox(),
        "--image",
        EVALUATION_IMAGE,
        "--timeout",
        600,
        "--memory",
        "6g",
        "--cpus",
        2,
        "--resamples",
        size["resamples"],
        "--submitter",
        "demo",
        "--model",
        model,
        "--institution",
        "MURA kit",
        "--link",
        LINK,
    )


def render_leaderboard(board: Path, out: Path) -> None:
    """5. Everyone sees the leaderboard."""
    mura("leaderboard", "render", "--db", board, "--format", "md", "--out", out / "leaderboard.md")
    mura("leaderboard", "render", "--db", board, "--format", "html", "--out", out / "leaderboard.html")


def draw_cams(data: Path, bundle: Path, cams: Path) -> None:
    """6. Where does the model look? Class activation maps of abnormal test studies."""
    rows = [line.split(",") for line in (data / MURA / "test_labeled_studies.csv").read_text().splitlines()]
    for study, _ in [row for row in rows if row[1] == "1"][:3]:
        target = cams / Path(study).parent.parent.name / Path(study).parent.name / Path(study).name
        if target.is_dir() and any(target.iterdir()):
            skip("the activation maps", target)
            continue
        mura("cam", data / study, "--bundle", bundle, "--out", target)


if __name__ == "__main__":
    main()
