"""`mura evaluate` as a fixed pipeline: anonymise -> run -> log -> map back -> score -> record.

Each step is a plain function. What the organiser gets, in the run folder OUT:

    OUT/log.txt            the submission's stdout and stderr (capped: head and tail)
    OUT/outcome.json       runner, seconds, exit code, limits, the memory cap (run-wide or per
                           process), and the failure reason if any
    OUT/predictions.csv    the submission's answer mapped back to the real study paths
    OUT/probabilities.csv  the same for its optional probabilities (the kit's predict.py writes them)
    OUT/result.json        the `mura score` result;  OUT/score.html  its report
    OUT/private/           the map back and the raw output: never mounted into a sandbox

While the submission runs, OUT/sandbox/ holds its staged data and its /output; both are deleted
once what counts has been collected (output.csv and probabilities.csv, into OUT/private/).

A participant's failure is recorded on the leaderboard with a reason they may read: it says
what happened and what to fix, and never carries a gold label or a real test-set path. The
organiser's own errors (a bad --test folder or gold file, a missing engine, a bad leaderboard
field, a run folder the sandbox could see) are HostErrors: exit 3, nothing recorded, and all
found before anything runs or is written.

A Progress says each stage on stderr as it happens (and the live line on a terminal).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from scorer import report
from scorer.errors import HostError, ParticipantError, shorten
from scorer.files import file_sha256, write_atomic
from scorer.formats import (
    PARTICIPANT_FILE_LIMIT,
    PREDICTIONS,
    PROBABILITIES,
    RaterTable,
    SubmissionFile,
    csv_field,
    read_gold,
    read_predictions,
    read_strata,
)
from scorer.harness.anonymise import Anonymised, anonymise, remove_tree, study_images
from scorer.harness.progress import Progress
from scorer.harness.sandbox import (
    OUTPUT_CSV,
    OUTPUT_MOUNT,
    PROBABILITIES_CSV,
    Limits,
    MemoryCap,
    MiB,
    Runner,
    RunOutcome,
    printable,
)
from scorer.pipeline import score_files
from scorer.settings import Settings
from scorer.validate import align

LOG_LINES_IN_REASON = 3


@dataclass
class Submission:
    """Who submitted what: the leaderboard entry's fields."""

    folder: Path
    submitter: str
    model: str | None = None
    institution: str | None = None
    link: str | None = None
    submitted: str | None = None  # ISO 8601; default: now


@dataclass
class Verdict:
    out: Path
    reason: str | None = None  # the participant's failure, or None when scored
    result: dict | None = None
    outcome: RunOutcome | None = None
    recorded: tuple[int, bool] | None = None  # (leaderboard id, newly added)

    @property
    def ok(self) -> bool:
        return self.reason is None


def evaluate(
    submission: Submission,
    test_dir: Path,
    gold: Path,
    out: Path,
    runner: Runner,
    limits: Limits,
    settings: Settings,
    *,
    strata: Path | None = None,
    db: Path | None = None,
    seed: int | None = None,
    progress: Progress | None = None,
    require_memory_cap: bool = False,
) -> Verdict:
    """Run, score and record one submission. Raises HostError for the organiser's errors.
    `require_memory_cap`: refuse (HostError) where the runner has no run-wide memory cap."""
    progress = progress or Progress(None)
    table, cap = check_host_inputs(
        submission, test_dir, gold, out, runner, limits, settings, strata, db, require_memory_cap
    )
    if not cap.run_wide:
        progress.warn(
            f"no run-wide memory cap: {cap.how}, so the run's processes together may use more than "
            f"--memory; --require-memory-cap refuses such a run"
        )
    verdict = Verdict(out)
    reason = missing_entry_point(submission.folder)
    if reason is None:
        verdict.outcome, reason = run_and_collect(
            submission, test_dir, table, out, runner, limits, cap, seed, progress
        )
    if reason is None:
        verdict.result = score_run(gold, out, settings, strata, progress)
    verdict.reason = None if reason is None else shorten(reason)  # the participant reads it
    write_outcome(out / "outcome.json", verdict, limits, cap)
    if db is not None:
        verdict.recorded = record(db, verdict, submission)
        sid, added = verdict.recorded
        progress.stage(f"{'recorded' if added else 'already recorded'} on {db} as submission {sid}")
    return verdict


# --- the steps ---------------------------------------------------------------------------------


def run_and_collect(
    submission: Submission,
    test_dir: Path,
    table: RaterTable,
    out: Path,
    runner: Runner,
    limits: Limits,
    cap: MemoryCap,
    seed: int | None,
    progress: Progress,
) -> tuple[RunOutcome, str | None]:
    """Stage the anonymised test set in OUT/sandbox/, run the submission on it, keep its log
    (OUT/log.txt) and map its answer back (OUT/private/, OUT/predictions.csv); the sandbox's
    folder is deleted whatever happens. Returns how the run ended and the participant's failure
    (None when the answer is complete)."""
    private = out / "private"
    sandbox = out / "sandbox"
    # Only the organiser may enter: the sandbox's user owns /output inside it.
    sandbox.mkdir(mode=0o700)
    try:
        start = time.monotonic()
        staged = anonymise(test_dir, table, sandbox / "data", private, seed)
        progress.stage(
            f"staged {staged.images:,} images of {len(staged.studies):,} studies in "
            f"{time.monotonic() - start:.1f} s"
        )
        output = sandbox / "output"
        output.mkdir()
        progress.stage(f"running in the {runner.name} sandbox: {describe_limits(limits, cap)}")
        with progress.running(limits) as watch:
            outcome = runner.run(submission.folder.resolve(), staged.data, output, limits, watch)
        progress.stage(f"ran for {outcome.seconds:.1f} s: {how_it_ended(outcome)}")
        (out / "log.txt").write_bytes(outcome.log)
        if outcome.leftovers:
            raise HostError(
                f"the {runner.name} sandbox could not stop everything the submission started "
                f"({', '.join(outcome.leftovers)}); stop it by hand"
            )
        reason = failure_reason(outcome, limits)
        if reason is None:
            reason = map_back(staged, output, private, out)
            if reason is None:
                kept = [n for n in ("output.csv", "probabilities.csv") if (private / n).is_file()]
                progress.stage(f"collected {' and '.join(kept)} ({len(staged.studies):,} studies)")
    except BaseException:  # a host error or a signal: the sandbox folder goes all the same
        with contextlib.suppress(OSError):
            remove_tree(sandbox)
        raise
    remove_sandbox(sandbox)  # what counts is in private/ now
    return outcome, reason


def score_run(gold: Path, out: Path, settings: Settings, strata: Path | None, progress: Progress) -> dict:
    """Score OUT/predictions.csv (and OUT/probabilities.csv) like `mura score`: OUT/result.json
    and OUT/score.html."""
    probabilities = out / "probabilities.csv"
    result = score_files(
        gold,
        out / "predictions.csv",
        settings,
        probabilities_path=probabilities if probabilities.is_file() else None,
        strata_path=strata,
    )
    write_atomic(out / "result.json", report.to_json(result))
    write_atomic(out / "score.html", report.to_html(result))
    kappa = result.get("Overall_Mean")
    progress.stage(f"scored: overall kappa {'undefined' if kappa is None else f'{kappa:.3f}'}")
    return result


def check_host_inputs(
    submission: Submission,
    test_dir: Path,
    gold: Path,
    out: Path,
    runner: Runner,
    limits: Limits,
    settings: Settings,
    strata: Path | None,
    db: Path | None,
    require_memory_cap: bool = False,
):
    """The organiser's inputs, checked before anything runs or is written. Returns the gold table
    and the runner's memory cap."""
    from scorer.leaderboard.records import check_entry

    limits.check()
    settings.check()
    folder = submission.folder
    if not folder.is_dir():
        raise HostError(f"submission {folder} is not a folder; expected the folder holding predict.py")
    if not test_dir.is_dir():
        raise HostError(f"--test {test_dir} is not a folder; expected the folder that holds MURA-v1.1/")
    organisers = {"--out": out, "--db": db, "--gold": gold, "--strata": strata, "--test": test_dir}
    check_apart(folder, runner, organisers)
    check_entry(leaderboard_entry(submission))  # a bad --link or --submitted must not cost a run
    table = read_gold(gold)
    study_images(test_dir, table)  # every gold study has its images (listed again when staging)
    if strata is not None:
        read_strata(strata, table.studies)
    if db is not None:  # a file that is not a leaderboard store must not cost a whole run
        from scorer.leaderboard.store import check_new_store, open_store

        if db.exists():
            with open_store(db):
                pass
        else:
            check_new_store(db)  # made when the first result is recorded, not by a refused run
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise HostError(f"--out {out} already exists and is not empty; choose a new folder (nothing was run)")
    runner.check(limits)  # the engine answers and has the image; bubblewrap works here
    cap = runner.memory_cap()
    if require_memory_cap and not cap.run_wide:
        raise HostError(
            f"--require-memory-cap: the {runner.name} sandbox has no run-wide memory cap here ({cap.how}); "
            "run as root on a cgroup v1 host, delegate cgroup v2's memory and pids controllers to this "
            "user (e.g. systemd-run --user --scope -p Delegate=yes), or use --runner docker (nothing was run)"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HostError(
            f"--out {out} cannot be made ({exc.strerror}); choose a new folder in a writable place"
        ) from None
    return table, cap


def describe_limits(limits: Limits, cap: MemoryCap) -> str:
    scope = "for the whole run" if cap.run_wide else "per process"
    return (
        f"{limits.timeout:g} s, {limits.memory / MiB:,.0f} MiB of memory {scope}, {limits.cpus:g} CPUs, "
        f"{limits.pids} processes" + (f", GPUs {limits.gpus}" if limits.gpus else "")
    )


def how_it_ended(outcome: RunOutcome) -> str:
    if outcome.flooded:
        return "stopped: a flood of output"
    if outcome.out_of_memory:
        return "the memory limit killed it"
    if outcome.timed_out:
        return "timed out"
    if outcome.output_exceeded:
        return "stopped: too much written to /output"
    return f"exit code {outcome.exit_code}"


def remove_sandbox(sandbox: Path) -> None:
    """The run's staged data and /output. Everything in them is the organiser's to remove (the
    sandboxes write as the organiser, or as another user for a root organiser); a failure says
    where."""
    try:
        remove_tree(sandbox)
    except OSError as exc:
        raise HostError(
            f"could not remove the sandbox's folder {sandbox} ({exc.strerror}: "
            f"{printable(str(exc.filename))}); remove it by hand"
        ) from None


def check_apart(folder: Path, runner: Runner, paths: dict[str, Path | None]) -> None:
    """No organiser's path may lie inside what the sandbox can read (the submission's folder, and
    the runner's other mounts), nor hold the submission: a run folder inside the submission
    would show the submission its own map back (private/map.csv)."""
    submission = folder.resolve()
    visible = [path.resolve() for path in runner.visible(submission)]
    for option, path in paths.items():
        if path is None:
            continue
        where = path.resolve()
        inside = next((v for v in visible if where.is_relative_to(v)), None)
        if inside is not None or submission.is_relative_to(where):
            if inside is None:
                relation = f"holds the submission {submission}"
            elif inside == submission:
                relation = f"lies inside the submission {submission}, which the sandbox can read"
            else:
                relation = f"lies inside {inside}, which the sandbox can read"
            raise HostError(
                f"{option} {path} {relation}; keep the organiser's files and the submission apart: "
                f"run `mura evaluate` from another folder or pass another {option} (nothing was run)"
            )


def missing_entry_point(folder: Path) -> str | None:
    entry = folder / "predict.py"
    if entry.is_file() and not entry.is_symlink():
        return None
    return (
        "the submission has no predict.py at its root; expected a file predict.py that runs as "
        "`python predict.py input.csv output.csv` (SPEC §3)"
    )


def failure_reason(outcome: RunOutcome, limits: Limits) -> str | None:
    """Why the run failed, in words a participant may read; None when it exited 0."""
    mib = f"{limits.memory / MiB:,.0f} MiB"
    processes = f" (it hit the process limit of {limits.pids})" if outcome.hit_process_limit else ""
    if outcome.output_exceeded:
        return (
            f"stopped: wrote more than {limits.output_size / MiB:,.0f} MiB or {limits.output_files:,} "
            f"files to {OUTPUT_MOUNT}; write only output.csv (and probabilities.csv) there"
        )
    if outcome.flooded:
        return (
            f"stopped: wrote more than {limits.output_limit / MiB:g} MiB to stdout/stderr; the log "
            "keeps its first and last part; print less (progress bars and per-image lines add up)"
        )
    if outcome.out_of_memory:
        return f"killed: exceeded the memory limit of {mib}; use smaller batches or fewer workers"
    if outcome.timed_out:
        return f"timed out after {limits.timeout:g} s{processes}; predict the whole test set within it"
    if outcome.exit_code != 0:
        tail = last_lines(outcome.log)
        return f"exit code {outcome.exit_code}{processes}; last lines of the log: {tail or '(none)'}"
    return None


def last_lines(log: bytes, count: int = LOG_LINES_IN_REASON, width: int = 300) -> str:
    lines = [line.strip() for line in log.decode("utf-8", errors="replace").splitlines() if line.strip()]
    text = printable(" | ".join(lines[-count:]))
    return text if len(text) <= width else "..." + text[-width:]


def collect(output: Path, name: str, private: Path) -> Path | str | None:
    """Copy the sandbox's `name` into the private folder, safely: a regular file only (not a
    symlink to the organiser's files, not a FIFO that blocks), of a sane size. Returns the
    copy, None when absent, or a failure reason."""
    source = output / name
    try:
        info = source.lstat()
    except FileNotFoundError:
        return None
    reason = answer_file_problem(info, f"/output/{name}")
    if reason is not None:
        return reason
    # By its mode, not by whether the organiser can open it: root could, and the verdict must
    # not depend on who the organiser is.
    if not info.st_mode & stat.S_IRUSR:
        return (
            f"/output/{name} has mode {stat.S_IMODE(info.st_mode):03o}, which its owner cannot read; "
            "write it with the usual permissions (e.g. 644)"
        )
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        return f"/output/{name} cannot be read ({exc.strerror}); write it with the usual permissions"
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(PARTICIPANT_FILE_LIMIT + 1)
    copy = private / name
    copy.write_bytes(data)
    return copy


def answer_file_problem(info: os.stat_result, shown: str) -> str | None:
    """Why an answer file (`shown`: its name as the submission sees it) cannot be taken, in words
    a participant may read: not a plain file, or too large (output.csv of MURA's test set is about
    20 KB); None when it can."""
    if not stat.S_ISREG(info.st_mode):
        return f"{shown} is not a regular file (a link, folder or pipe); write a plain CSV file"
    if info.st_size > PARTICIPANT_FILE_LIMIT:
        return (
            f"{shown} is {info.st_size / MiB:,.0f} MiB; expected one short line per study "
            f"(at most {PARTICIPANT_FILE_LIMIT / MiB:g} MiB)"
        )
    return None


def map_back(staged: Anonymised, output: Path, private: Path, out: Path) -> str | None:
    """Check the answer in the anonymised names (the scorer's own rules, so its messages name
    only what the submission saw), then write it with the real study paths."""
    copy = collect(output, "output.csv", private)
    if isinstance(copy, str):
        return copy
    if copy is None:
        return (
            f"wrote no output.csv; expected {OUTPUT_CSV} (the second argument of predict.py) with "
            "one `study_path/,0|1` line per study"
        )
    try:
        write_real(staged, copy, out / "predictions.csv", PREDICTIONS)
    except ParticipantError as exc:
        return exc.message
    probabilities = collect(output, "probabilities.csv", private)
    if isinstance(probabilities, str):
        return probabilities
    if probabilities is not None:
        try:
            write_real(staged, probabilities, out / "probabilities.csv", PROBABILITIES)
        except ParticipantError as exc:
            return f"{PROBABILITIES_CSV} (optional, but invalid): {exc.message}"
    return None


def write_real(staged: Anonymised, path: Path, target: Path, kind: SubmissionFile) -> None:
    values = align(read_predictions(path, kind), staged.studies, kind)
    lines = (
        f"{csv_field(staged.real[study])},{int(value) if kind is PREDICTIONS else repr(float(value))}\n"
        for study, value in zip(staged.studies, values)
    )
    write_atomic(target, "".join(lines))


def write_outcome(path: Path, verdict: Verdict, limits: Limits, cap: MemoryCap) -> None:
    outcome = verdict.outcome
    record = {
        "status": "scored" if verdict.ok else "failed",
        "reason": verdict.reason,
        "limits": asdict(limits),
        "memory_cap": asdict(cap),
        "run": None if outcome is None else {k: v for k, v in asdict(outcome).items() if k not in ("log",)},
        "kappa": None if verdict.result is None else verdict.result.get("Overall_Mean"),
    }
    write_atomic(path, json.dumps(record, indent=2) + "\n")


def folder_sha256(folder: Path) -> str:
    """One hash of a submission folder's names and contents (bundle and code), stable across
    copies: relative paths in sorted order, each with its content's hash or link target."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if "__pycache__" in path.parts:
            continue
        relative = path.relative_to(folder).as_posix()
        if path.is_symlink():
            digest.update(f"L {relative} {os.readlink(path)}\n".encode())
        elif path.is_file():
            digest.update(f"F {relative} {file_sha256(path)}\n".encode())
    return digest.hexdigest()


def record(db: Path, verdict: Verdict, submission: Submission) -> tuple[int, bool]:
    """The result, or the failure and its reason, on the leaderboard."""
    from scorer.leaderboard.store import open_store

    entry = leaderboard_entry(submission, folder_sha256(submission.folder))
    with open_store(db) as store:
        if verdict.result is not None:
            return store.add_result(verdict.result, entry)
        return store.add_failure(verdict.reason, entry)


def leaderboard_entry(submission: Submission, content_sha256: str | None = None):
    """The submission's leaderboard Entry (submitted: now when not given)."""
    from scorer.leaderboard.store import Entry

    return Entry(
        submitter=submission.submitter,
        model=submission.model,
        institution=submission.institution,
        link=submission.link,
        submitted=submission.submitted or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        content_sha256=content_sha256,
    )
