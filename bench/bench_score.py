"""Benchmark `mura score`: whole processes from MURA's size to a million studies, and the bootstrap.

Measures, in one run on the same data:
1. whole `mura score GOLD PREDICTIONS --format json` processes, each measured from outside
   (wall clock; CPU time and peak memory, the max RSS, from GNU time), best of N:
   - MURA's hidden test: 207 studies, six radiologists (three form the gold standard; target: a
     process under 1 s);
   - MURA's validation set's shape: 1,199 studies, `study,label`;
   - a million studies, six radiologists (a 67 MB gold file, a 57 MB submission; targets: under
     5 s and 500 MB): the submission's rows shuffled (as a participant may write them) with each
     path spelled as the gold file spells it; the same rows in the gold file's order (as
     predict.py writes MURA's studies); shuffled rows without the label suffix (matched on
     label-blind keys).
   With --baseline DIR (a checkout of the code to compare with, e.g. `git worktree add --detach
   /tmp/old 3fb80e4`, the tree before issue 13's scale work) the same runs of that code,
   alternating with the kit's, on the same files; the two must print the same bytes;
2. the bootstrap itself -- 10,000 resamples of the model and three radiologists against the
   gold standard, with the paired differences -- done by the kit (multinomial draws on joint
   confusion cells) and by the naive loop (resample study indices, call
   sklearn.metrics.cohen_kappa_score per rater) (target: at least 100 times faster);
3. in process, at a million studies: reading and matching the files against scoring them
   (metrics and bootstrap intervals of 8 groups), so the bootstrap's share shows.

Run: .venv/bin/python bench/bench_score.py [--baseline DIR] [--runs 5] [--large-runs 3]
     [--large 1000000] [--resamples 10000] [--naive-resamples 10000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scorer.formats import read_gold, read_predictions  # noqa: E402
from scorer.gold import choose_panel  # noqa: E402
from scorer.paths import STUDY_TYPES  # noqa: E402
from scorer.pipeline import score_group, score_table  # noqa: E402
from scorer.settings import Settings  # noqa: E402
from scorer.validate import align  # noqa: E402

CPU_FLAGS = ("avx2", "avx512_bf16", "amx_tile")


# --- test sets of any size ---------------------------------------------------------------------


@dataclass(frozen=True)
class Test:
    studies: list[str]  # as the gold file spells them
    unlabelled: list[str]  # the same without the study folder's label suffix
    votes: np.ndarray  # (studies, raters) 0/1
    model: np.ndarray  # a submission's 0/1, right on 88% of the studies


def make_test(studies: int, raters: int, seed: int = 0) -> Test:
    """MURA-shaped studies under all seven types and `raters` noisy reads of each."""
    rng = np.random.default_rng(seed)
    abnormal = rng.random(studies) < 0.4
    votes = (rng.random((studies, raters)) < np.where(abnormal, 0.85, 0.1)[:, None]).astype(np.int8)
    i = np.arange(studies)
    kinds = np.array(STUDY_TYPES)[i % len(STUDY_TYPES)].tolist()
    patients = ((i // len(STUDY_TYPES)) % 100_000).tolist()  # folder names repeat across types
    numbers = (i // (len(STUDY_TYPES) * 100_000) + 1).tolist()
    split = "test" if raters > 1 else "valid"
    folders = [
        f"MURA-v1.1/{split}/XR_{k}/patient{p:05d}/study{n}" for k, p, n in zip(kinds, patients, numbers)
    ]
    labels = np.where(abnormal, "_positive/", "_negative/").tolist()
    model = np.where(rng.random(studies) < 0.88, abnormal, ~abnormal).astype(np.int8)
    return Test([f + s for f, s in zip(folders, labels)], [f + "/" for f in folders], votes, model)


def write_test(
    folder: Path, test: Test, *, suffixes: bool = True, shuffled: bool = True, seed: int = 0
) -> tuple[Path, Path]:
    """The gold file (`study,Rad1,...` or, with one rater, `study,label`) and the submission: a
    row per study, shuffled or in the gold file's order, its paths spelled as the gold file's
    or, with suffixes=False, without the study folder's label suffix."""
    gold = folder / "gold.csv"
    submission = folder / f"output{'' if suffixes else '-no-suffix'}{'' if shuffled else '-in-order'}.csv"
    gold.write_text(
        "".join(f"{s}," + ",".join(map(str, v)) + "\n" for s, v in zip(test.studies, test.votes.tolist()))
    )
    paths, model = test.studies if suffixes else test.unlabelled, test.model.tolist()
    order = np.random.default_rng(seed).permutation(len(paths)).tolist() if shuffled else range(len(paths))
    submission.write_text("".join(f"{paths[k]},{model[k]}\n" for k in order))
    return gold, submission


# --- whole processes, measured from outside ------------------------------------------------------


@dataclass(frozen=True)
class Run:
    wall: float  # s
    cpu: float  # s, user + system
    peak: float  # MiB, max RSS
    output: bytes


# GNU time reports the measured process's own peak memory (os.wait4 on a child forked from this
# process would count this one's pages too).
TIME = Path("/usr/bin/time")


def mura_score(code: Path, gold: Path, submission: Path, resamples: int) -> Run:
    """One `python -m mura score` process of the code in `code`."""
    command = [sys.executable, "-m", "mura", "score", str(gold), str(submission), "--format", "json"]
    command += ["--resamples", str(resamples)]
    env = {**os.environ, "PYTHONPATH": str(code)}
    with tempfile.NamedTemporaryFile("r") as usage:
        start = time.perf_counter()
        process = subprocess.run(
            [str(TIME), "-f", "%U %S %M", "-o", usage.name, *command], capture_output=True, env=env, cwd=code
        )
        wall = time.perf_counter() - start
        if process.returncode != 0:
            raise RuntimeError(
                f"{command} in {code} exited {process.returncode}: {process.stderr.decode()[-500:]}"
            )
        user, system, peak = usage.read().split()[-3:]
    return Run(wall, float(user) + float(system), int(peak) / 1024, process.stdout)


@dataclass(frozen=True)
class Case:
    name: str
    gold: Path
    submission: Path
    runs: int


def measure(cases: list[Case], codes: dict[str, Path], resamples: int) -> dict[tuple[str, str], list[Run]]:
    """Every case with every code, the codes' runs alternating (a shared machine's load falls on
    both alike); the codes must print the same bytes."""
    runs: dict[tuple[str, str], list[Run]] = {}
    for case in cases:
        for _ in range(case.runs):
            for name, code in codes.items():
                runs.setdefault((case.name, name), []).append(
                    mura_score(code, case.gold, case.submission, resamples)
                )
        outputs = {runs[case.name, name][0].output for name in codes}
        if len(outputs) != 1:
            raise RuntimeError(f"{case.name}: the kit and the baseline print different results")
    return runs


def best(runs: list[Run]) -> Run:
    return min(runs, key=lambda run: run.wall)


def process_table(cases: list[Case], runs: dict[tuple[str, str], list[Run]], baseline: bool) -> str:
    lines = [
        "| `mura score`, whole process | kit: wall, best of N | CPU | peak memory | "
        + ("baseline: wall | CPU | peak memory | wall ratio |" if baseline else ""),
        "|---|---|---|---|" + ("---|---|---|---|" if baseline else ""),
    ]
    for case in cases:
        kit = best(runs[case.name, "kit"])
        row = f"| {case.name} (N = {case.runs}) | {kit.wall:.2f} s | {kit.cpu:.2f} s | {kit.peak:,.0f} MiB |"
        if baseline:
            old = best(runs[case.name, "baseline"])
            row += f" {old.wall:.2f} s | {old.cpu:.2f} s | {old.peak:,.0f} MiB | {old.wall / kit.wall:.1f}x |"
        lines.append(row)
    return "\n".join(lines)


# --- the bootstrap against the naive loop ------------------------------------------------------


def naive_bootstrap(truth, raters: dict, resamples: int, seed: int) -> dict:
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(seed)
    n = len(truth)
    kappas = {name: np.empty(resamples) for name in raters}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for b in range(resamples):
            idx = rng.integers(0, n, n)
            for name, reads in raters.items():
                kappas[name][b] = cohen_kappa_score(truth[idx], reads[idx])
    out = {name: np.nanpercentile(k, [2.5, 97.5]) for name, k in kappas.items()}
    for name in list(raters)[1:]:
        out[f"model-{name}"] = np.nanpercentile(kappas["model"] - kappas[name], [2.5, 97.5])
    return out


def bootstrap_against_naive(resamples: int, naive_resamples: int) -> str:
    test = make_test(207, 6)
    gold_idx, rad_idx = [0, 3, 4], [1, 2, 5]
    truth = (test.votes[:, gold_idx].sum(axis=1) >= 2).astype(np.int8)
    raters = {"model": test.model, **{f"Rad{i + 1}": test.votes[:, i] for i in rad_idx}}
    start = time.perf_counter()
    score_group(truth, raters, "Overall", Settings(resamples=resamples))
    kit = time.perf_counter() - start
    start = time.perf_counter()
    naive_bootstrap(truth, raters, naive_resamples, seed=0)
    naive = (time.perf_counter() - start) * resamples / naive_resamples
    scaled = f" (extrapolated from {naive_resamples:,})" if naive_resamples != resamples else ""
    return (
        f"bootstrap, overall group, model + 3 radiologists + paired differences, {resamples:,} "
        f"resamples: kit {kit * 1000:.1f} ms, naive loop {naive:.1f} s{scaled} -> {naive / kit:,.0f}x"
    )


# --- in process: reading against scoring ---------------------------------------------------------


def phases(gold: Path, submission: Path, resamples: int, repeats: int = 3) -> str:
    """Best-of times of reading and matching the files, and of scoring the matched reads."""
    settings = Settings(resamples=resamples)
    reading, scoring = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        table = read_gold(gold)
        model = align(read_predictions(submission), table.studies)
        reading.append(time.perf_counter() - start)
        panel = choose_panel(table, None, settings.seed)
        start = time.perf_counter()
        score_table(table, panel, model, settings)
        scoring.append(time.perf_counter() - start)
    return (
        f"in process, {len(model):,} studies: reading and matching {min(reading):.2f} s, "
        f"scoring (metrics and {resamples:,}-resample bootstrap of 8 groups) {min(scoring):.2f} s"
    )


def python_start(runs: int) -> float:
    walls = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        walls.append(time.perf_counter() - start)
    return min(walls)


# --- the machine ---------------------------------------------------------------------------------


def machine() -> str:
    flags = set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").exists() else set()
    present = [flag for flag in CPU_FLAGS if flag in flags] or ["none of " + ", ".join(CPU_FLAGS)]
    return f"{os.cpu_count()} CPUs, flags {', '.join(present)}; load average {os.getloadavg()[0]:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", type=Path, help="a checkout of the code to compare with")
    parser.add_argument("--runs", type=int, default=5, help="runs of each MURA-sized process")
    parser.add_argument("--large-runs", type=int, default=3, help="runs of each million-study process")
    parser.add_argument("--large", type=int, default=1_000_000, help="studies of the large test")
    parser.add_argument("--resamples", type=int, default=10_000)
    parser.add_argument("--naive-resamples", type=int, default=10_000)
    args = parser.parse_args()

    if not TIME.is_file():
        sys.exit(f"{TIME} is missing: it measures each process's peak memory (apt-get install time)")
    print(f"start: {machine()}", flush=True)
    codes = {"kit": ROOT, **({"baseline": args.baseline.resolve()} if args.baseline else {})}
    with tempfile.TemporaryDirectory(prefix="bench-score-") as tmp:
        folders = [Path(tmp) / name for name in ("test", "valid", "large")]
        for folder in folders:
            folder.mkdir()
        test, valid = write_test(folders[0], make_test(207, 6)), write_test(folders[1], make_test(1_199, 1))
        large_test = make_test(args.large, 6)
        large = write_test(folders[2], large_test)
        _, in_order = write_test(folders[2], large_test, shuffled=False)
        _, unsuffixed = write_test(folders[2], large_test, suffixes=False)
        del large_test
        million = f"{args.large:,} studies, 6 raters"
        cases = [
            Case("MURA's hidden test: 207 studies, 6 raters", *test, args.runs),
            Case("MURA's validation set: 1,199 studies, `study,label`", *valid, args.runs),
            Case(f"{million}, rows shuffled, paths as the gold spells them", *large, args.large_runs),
            Case(
                f"{million}, rows in the gold order (as predict.py writes MURA's)",
                large[0],
                in_order,
                args.large_runs,
            ),
            Case(
                f"{million}, rows shuffled, paths without the label suffix",
                large[0],
                unsuffixed,
                args.large_runs,
            ),
        ]
        runs = measure(cases, codes, args.resamples)
        print(process_table(cases, runs, args.baseline is not None))
        print(f"python -c pass: {python_start(args.runs):.3f} s (best of {args.runs})")
        print(phases(*large, args.resamples))
    print(bootstrap_against_naive(args.resamples, args.naive_resamples))
    print(f"end: {machine()}")


if __name__ == "__main__":
    main()
