"""The Codabench ingestion program: runs a participant's predict.py on the hidden test set the
way `mura evaluate` does, inside Codabench's prediction container, and checks its answer.

A compute worker runs it (the `command` of the program's metadata.yaml, written by `mura
codabench bundle`) with the working directory /app/program, where this program and the kit's
modules it imports are unzipped:

    python3 -m scorer.codabench.ingestion /app/input_data /app/ingested_program /app/output \\
        --time-limit 570 [--worker-data /app/data]

INPUT holds `input.csv` (image paths relative to the data folder) and the anonymised images; with
`--worker-data`, INPUT holds `worker_data.json` instead (which folder of the worker's own /app/data
holds the images, and each image's sha256), so that the images never leave the organiser's
workers. SUBMISSION is the participant's unzipped submission, OUTPUT what the prediction step
hands to the scoring step (its res/). Reference data is never mounted here, and never read.

1. OUTPUT is emptied (the worker copies the submission there) and INGESTION_FAILED is written: if
   this program stops before it is done, the scoring program fails the submission with it.
2. `python3 predict.py input.csv output.csv` runs from SUBMISSION with input.csv listing the
   images by absolute path (/app/input_data/test/XR_WRIST/case0001/image1.png) and
   MURA_PROBABILITIES set, in its own process group; past the time limit every process it
   started is killed (the program is a child subreaper, so a process that left the group is
   found too). Its stdout and stderr pass through as they come (Codabench shows them live).
3. The answer is checked in the names the submission saw, by the scorer's own rules (every case
   once, 0 or 1), and written to OUTPUT/output.csv in the reference data's names
   (test/XR_WRIST/case0001/,1), with probabilities.csv when the submission wrote valid ones.

Codabench itself sets no memory, process or network limits: only what a process can do to its
children is done here (a core-dump and file-size rlimit, the kill at the time limit); the rest
is the organiser's workers' (README.md, "Hosting on Codabench"). A failure ends with one line
on stderr, worded as `mura evaluate` words it, and exit code 2 (the submission's) or 3 (the
organiser's); the same line is left in OUTPUT/ingestion_failed.txt for the scoring step.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from scorer.codabench import INGESTION_FAILED, host_line
from scorer.errors import HostError, ParticipantError, ScoringError, examples
from scorer.files import file_sha256, write_together
from scorer.formats import PREDICTIONS, PROBABILITIES, SubmissionFile, read_predictions
from scorer.harness.evaluate import answer_file_problem, failure_reason, missing_entry_point
from scorer.harness.sandbox import Limits, MiB, RunOutcome, kill_until_gone, shell_exit_code, sigkill
from scorer.paths import normalize_study, study_of_image
from scorer.validate import align

INPUT_CSV = "input.csv"
WORKER_DATA = "worker_data.json"  # with --data-on-worker: {"folder": NAME, "images": {path: sha256}}
RUNNER = "codabench"
TAIL = 64 * 1024  # the bytes of the submission's output kept for the failure reason
PR_SET_CHILD_SUBREAPER = 36  # prctl option (linux/prctl.h)
STOP_PATIENCE = 2.0  # seconds killed processes get to disappear before they count as leftovers
# A submission's own metadata file makes Codabench run its command beside this program.
SUBMISSION_METADATA = ("metadata.yaml", "metadata")
UNFINISHED = (
    f"{ScoringError.prefix}: the ingestion program stopped before it checked the answer (a bug in "
    "it, or it was stopped); the prediction step's log says more"
)


@dataclass(frozen=True)
class Cases:
    """What the submission is given: the data folder, the images (relative to it, in input.csv's
    order) and each study's folder (relative, in order of first appearance)."""

    root: Path
    images: tuple[str, ...]
    studies: tuple[str, ...]

    def seen(self, study: str) -> str:
        """A study as the submission sees it: its absolute folder."""
        return normalize_study(f"{self.root.as_posix()}/{study}")


# --- the organiser's input --------------------------------------------------------------------


def read_cases(input_dir: Path, worker_data: Path | None) -> Cases:
    """input.csv and the data folder it is relative to (checked against worker_data.json)."""
    listing = input_dir / INPUT_CSV
    try:
        lines = listing.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise HostError(
            f"the task's input data has no readable {INPUT_CSV} ({exc}); expected the input data "
            "written by `mura codabench bundle`"
        ) from None
    images = tuple(line.strip() for line in lines if line.strip())
    bad = [p for p in images if p.startswith("/") or ".." in p.split("/") or "/" not in p]
    if not images or bad:
        raise HostError(
            f"{INPUT_CSV} of the task's input data: expected image paths relative to the data folder, "
            f"found {examples(bad) if bad else 'none'}; rebuild the bundle with `mura codabench bundle`"
        )
    root = input_dir if worker_data is None else worker_folder(input_dir, worker_data, images)
    root = Path(os.path.abspath(root))  # /app/input_data as it is; a relative one made absolute
    studies = tuple(dict.fromkeys(study_of_image(p) for p in images))
    return Cases(root, images, studies)


def worker_folder(input_dir: Path, worker_data: Path, images: tuple[str, ...]) -> Path:
    """The folder of the worker's own data that holds the images, checked file by file: a worker
    with a missing, partial or stale copy must not score submissions on it."""
    try:
        spec = json.loads((input_dir / WORKER_DATA).read_text(encoding="utf-8"))
        folder, hashes = spec["folder"], spec["images"]
        assert isinstance(folder, str) and "/" not in folder and isinstance(hashes, dict)
    except (OSError, ValueError, KeyError, TypeError, AssertionError) as exc:
        raise HostError(
            f"the task's input data has no valid {WORKER_DATA} ({type(exc).__name__}); expected the "
            "input data `mura codabench bundle --data-on-worker` writes"
        ) from None
    root = worker_data / folder
    wrong = [
        path for path in images if not (root / path).is_file() or file_sha256(root / path) != hashes.get(path)
    ]
    if wrong:
        raise HostError(
            f"this worker's {root} lacks or has other bytes for {len(wrong)} of {len(images)} images "
            f"(e.g. {examples(wrong, 3)}); copy the folder {folder} that `mura codabench bundle "
            "--data-on-worker` wrote into HOST_DIRECTORY/data/ of every compute worker"
        )
    return root


# --- /app/output ------------------------------------------------------------------------------


def empty_folder(folder: Path) -> list[str]:
    """Remove what `folder` holds (links are removed, never followed); the names it could not."""
    left = []
    for entry in folder.iterdir():
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError:
            left.append(entry.name)
    return left


def mark_failed(output: Path, line: str) -> None:
    """Leave `line` for the scoring step, and no answer beside it."""
    for name in ("output.csv", "probabilities.csv"):
        with suppress(OSError):
            (output / name).unlink()
    write_together({output / INGESTION_FAILED: line + "\n"})


# --- running predict.py -----------------------------------------------------------------------


class Tee:
    """Passes a child's stdout and stderr through to ours as they come, keeping the last TAIL
    bytes of both (in arrival order) for the failure reason. Past `limit` bytes in all it sets
    `flood` and passes nothing more (the run is then stopped)."""

    def __init__(self, pairs: list[tuple[object, object]], limit: int) -> None:
        self.total = 0
        self.flood = threading.Event()
        self._limit = limit
        self._tail = bytearray()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._pump, args=pair, daemon=True) for pair in pairs]
        for thread in self._threads:
            thread.start()

    def _pump(self, source, target) -> None:
        fd = source.fileno()
        while chunk := os.read(fd, 65536):
            with self._lock:
                self.total += len(chunk)
                self._tail += chunk
                del self._tail[: max(0, len(self._tail) - TAIL)]
                if self.total > self._limit:
                    self.flood.set()
            if not self.flood.is_set():
                target.write(chunk)
                target.flush()

    def finish(self, timeout: float = 5.0) -> bytes:
        for thread in self._threads:
            thread.join(timeout)
        with self._lock:
            return bytes(self._tail)


def become_subreaper() -> bool:
    """Make this process the reaper of its descendants' orphans (Linux), so that a process
    that left the submission's process group (setsid) is still found and stopped."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def descendants(ancestor: int) -> list[int]:
    """The live (not zombie) processes below `ancestor`, from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if fields and fields[0] != "Z":
            parents[int(entry.name)] = int(fields[1])
    found, frontier = [], {ancestor}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier}
        found.extend(frontier)
    return found


def reap() -> None:
    """Collect the exit status of any child that ended (orphans handed to us as subreaper)."""
    with suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def live_descendants() -> set[int]:
    """The processes below this one, once those that ended (ours, or orphans handed to us as
    subreaper) are collected."""
    reap()
    return set(descendants(os.getpid()))


def stop_everything(leader: int) -> list[int]:
    """SIGKILL the submission's process group and every process below this one, until none is
    left. Returns what could not be stopped (must be [])."""
    with suppress(OSError):
        os.killpg(leader, signal.SIGKILL)
    return sorted(kill_until_gone(live_descendants, sigkill, STOP_PATIENCE, pause=0.02))


def limit_child(file_size: int) -> Callable[[], None]:
    """The rlimits a process can set on its children: no core dumps into the folders, and a cap
    on the size of any one file it writes."""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))

    return apply


def run_predict(submission: Path, input_csv: Path, output_csv: Path, env: dict, limits: Limits) -> RunOutcome:
    """`python3 predict.py INPUT OUTPUT` from `submission`, within limits.timeout; nothing of it
    is left when this returns."""
    become_subreaper()
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "predict.py", str(input_csv), str(output_csv)],
        cwd=submission,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=limit_child(limits.file_size),
    )
    tee = Tee([(proc.stdout, sys.stdout.buffer), (proc.stderr, sys.stderr.buffer)], limits.output_limit)
    deadline = start + limits.timeout
    stopped = None
    while proc.poll() is None:
        if tee.flood.is_set():
            stopped = "flood"
        elif time.monotonic() >= deadline:
            stopped = "timeout"
        if stopped:
            break
        tee.flood.wait(min(0.1, max(0.0, deadline - time.monotonic())))
    if stopped:
        with suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
    code = proc.wait()
    seconds = time.monotonic() - start
    leftovers = stop_everything(proc.pid)  # also what it left running after a normal exit
    log = tee.finish()
    if tee.flood.is_set():  # the log so far had its first part; now its last part
        past = f"\n[... output past {limits.output_limit / MiB:g} MiB dropped; its last {len(log):,} B:]\n"
        sys.stderr.buffer.write(past.encode() + log + b"\n")
        sys.stderr.flush()
    return RunOutcome(
        runner=RUNNER,
        exit_code=None if stopped else shell_exit_code(code),
        seconds=seconds,
        timed_out=stopped == "timeout",
        flooded=tee.flood.is_set(),
        log=log,
        log_bytes=tee.total,
        leftovers=[str(pid) for pid in leftovers],
    )


# --- the answer -------------------------------------------------------------------------------


def answer_lines(path: Path, cases: Cases, kind: SubmissionFile) -> str:
    """The submission's file checked in the names it saw, as lines in the reference names."""
    values = align(read_predictions(path, kind), [cases.seen(s) for s in cases.studies], kind)
    shown = (str(int(v)) if kind is PREDICTIONS else repr(float(v)) for v in values)
    return "".join(f"{study},{value}\n" for study, value in zip(cases.studies, shown))


def check_answer(folder: Path, cases: Cases) -> str | dict[str, str]:
    """Check output.csv (and the optional probabilities.csv) the run left in `folder`: the files
    in the reference names, or the participant's failure."""
    answer, probabilities = folder / "output.csv", folder / "probabilities.csv"
    if not answer.exists() and not answer.is_symlink():
        return (
            f"wrote no output.csv; expected {answer} (the second argument of predict.py) with one "
            "`study_path/,0|1` line per study"
        )
    files: dict[str, str] = {}
    try:
        reason = answer_file_problem(answer.lstat(), str(answer))
        if reason is not None:
            return reason
        files["output.csv"] = answer_lines(answer, cases, PREDICTIONS)
    except ParticipantError as exc:
        return exc.message
    if probabilities.exists() or probabilities.is_symlink():
        what = f"{probabilities} (MURA_PROBABILITIES; optional, but invalid)"
        try:
            reason = answer_file_problem(probabilities.lstat(), str(probabilities))
            if reason is not None:
                return f"{what}: {reason}"
            files["probabilities.csv"] = answer_lines(probabilities, cases, PROBABILITIES)
        except ParticipantError as exc:
            return f"{what}: {exc.message}"
    return files


# --- the whole step ---------------------------------------------------------------------------


def check_submission(submission: Path) -> str | None:
    """The participant's failures found before anything runs."""
    reason = missing_entry_point(submission)
    if reason is not None:
        return reason
    extra = [name for name in SUBMISSION_METADATA if (submission / name).exists()]
    if extra:
        return (
            f"the submission has a {extra[0]} at its root, whose command Codabench would run beside "
            "this ingestion program; expected only predict.py and its files: remove it and zip again"
        )
    return None


def ingest(
    input_dir: Path, submission: Path, limits: Limits, worker_data: Path | None
) -> str | dict[str, str]:
    """Run and check one submission: the answer's files in the reference names, or the
    participant's failure. Nothing the submission started is left running when it returns."""
    cases = read_cases(input_dir, worker_data)
    reason = check_submission(submission)
    if reason is not None:
        return reason
    print(
        f"ingestion: predict.py on {len(cases.studies)} studies ({len(cases.images)} images), "
        f"time limit {limits.timeout:g} s",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="mura-ingestion-", ignore_cleanup_errors=True) as tmp:
        folder = Path(tmp)
        listing = folder / INPUT_CSV
        listing.write_text("".join(f"{cases.root.as_posix()}/{image}\n" for image in cases.images))
        env = {**os.environ, "MURA_PROBABILITIES": str(folder / "probabilities.csv")}
        outcome = run_predict(submission, listing, folder / "output.csv", env, limits)
        if outcome.leftovers:
            raise HostError(
                f"the ingestion program could not stop everything the submission started "
                f"(processes {', '.join(outcome.leftovers)}); stop this worker's containers by hand"
            )
        reason = failure_reason(outcome, limits)
        answer = check_answer(folder, cases) if reason is None else reason
    print(f"ingestion: predict.py ran {outcome.seconds:.1f} s", flush=True)
    return answer


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python3 -m scorer.codabench.ingestion", description=__doc__.split("\n")[0]
    )
    parser.add_argument("input", type=Path, help="the task's input data (/app/input_data)")
    parser.add_argument("submission", type=Path, help="the participant's submission (/app/ingested_program)")
    parser.add_argument("output", type=Path, help="the prediction step's output (/app/output)")
    parser.add_argument("--time-limit", type=float, required=True, help="seconds predict.py may run")
    parser.add_argument("--worker-data", type=Path, help="the worker's own data folder (/app/data)")
    return parser.parse_args(argv)


def clear_output(output: Path) -> None:
    """Empty the prediction step's output (first the worker's copy of the submission, then what
    the submission left there): it hands on the answer alone."""
    try:
        left = empty_folder(output)
    except OSError as exc:
        raise HostError(
            f"the prediction output {output} cannot be read ({exc}); expected a writable folder"
        ) from None
    if left:
        raise HostError(
            f"the prediction output {output} holds {examples(left)}, which cannot be removed; run the "
            "image's programs as root, or as the user who owns the worker's folders"
        )


def main(argv: list[str]) -> int:
    args = parse(argv)
    limits = Limits(timeout=args.time_limit)
    try:
        limits.check()
        clear_output(args.output)
        write_together({args.output / INGESTION_FAILED: UNFINISHED + "\n"})
        answer = ingest(args.input, args.submission, limits, args.worker_data)
        clear_output(args.output)  # the submission is gone: nothing writes there any more
        if isinstance(answer, dict):
            write_together({args.output / name: text for name, text in answer.items()})
            print("ingestion: the answer has a 0 or 1 for every case; output.csv written", flush=True)
            return 0
        line = stored = ParticipantError(answer).line()
    except (HostError, OSError) as exc:
        error = exc if isinstance(exc, HostError) else HostError(f"{args.output} cannot be written ({exc})")
        line, stored = host_line(error), error.line()
    with suppress(OSError):
        mark_failed(args.output, stored)
    print(line, file=sys.stderr, flush=True)
    return 3 if line.startswith(HostError.prefix) else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
