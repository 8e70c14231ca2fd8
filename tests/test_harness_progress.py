"""`mura evaluate` says what happens as it happens: a stderr line per stage, a live line on a
terminal (the elapsed time against the limit and the submission's last log line, never its
terminal escapes), and with --quiet only the final line."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
from pathlib import Path

import pytest
from harness_helpers import make_hidden_test, runner_or_skip

from scorer.harness import bwrap_runner

ROOT = Path(__file__).resolve().parents[1]
IMAGE = os.environ.get("MURA_TEST_IMAGE", "mura-evaluation:test")


@pytest.fixture(scope="module")
def hidden(tmp_path_factory):
    return make_hidden_test(tmp_path_factory.mktemp("hidden"), n=9)


def runner_name() -> str:
    """bubblewrap if it is here, else docker (skips, in CI fails, when neither is)."""
    name = "bwrap" if bwrap_runner.unavailable_reason() is None else "docker"
    runner_or_skip(name)
    return name


def submission(folder: Path, code: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "predict.py").write_text(
        "import sys, time\n"
        "from pathlib import Path\n"
        "images = [l for l in Path(sys.argv[1]).read_text().splitlines() if l]\n"
        "studies = dict.fromkeys(i.rpartition('/')[0] + '/' for i in images)\n" + code
    )
    return folder


ANSWER = "Path(sys.argv[2]).write_text(''.join(f'{s},1\\n' for s in studies))\n"


def command(folder: Path, hidden, out: Path, db: Path, *options: str) -> list[str]:
    test_dir, gold, _ = hidden
    return [
        sys.executable,
        "-m",
        "mura",
        "evaluate",
        str(folder),
        "--test",
        str(test_dir),
        "--gold",
        str(gold),
        "--db",
        str(db),
        "--out",
        str(out),
        "--runner",
        runner_name(),
        "--image",
        IMAGE,
        "--timeout",
        "60",
        "--memory",
        "512m",
        "--resamples",
        "100",
        *options,
    ]


def environment() -> dict[str, str]:
    """This environment with the kit first on PYTHONPATH (kept: an organiser who is not root
    finds the kit's packages through it)."""
    paths = [str(ROOT), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def evaluate(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = environment()
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, env=env)


@pytest.mark.required_in_ci
@pytest.mark.unprivileged
def test_each_stage_is_said_on_stderr_and_quiet_keeps_only_the_final_line(hidden, tmp_path):
    good = submission(tmp_path / "good", ANSWER + "print('done')\n")
    db = tmp_path / "board.sqlite"
    done = evaluate(command(good, hidden, tmp_path / "r1", db), tmp_path)
    assert done.returncode == 0, done.stderr
    name = runner_name()
    expected = [
        r"staged \d+ images of 9 studies in \d+\.\d s",
        rf"running in the {name} sandbox: 60 s, 512 MiB of memory (for the whole run|per process), 2 CPUs, "
        r"256 processes",
        r"ran for \d+\.\d s: exit code 0",
        r"collected output\.csv \(9 studies\)",
        r"scored: overall kappa -?\d\.\d{3}",
        rf"recorded on {re.escape(str(db))} as submission 1",
    ]
    lines = [line for line in done.stderr.splitlines() if "WARNING: no run-wide memory cap" not in line]
    assert len(lines) == len(expected), done.stderr
    for line, pattern in zip(lines, expected):
        assert re.fullmatch(f"mura evaluate: {pattern}", line), (line, pattern)
    assert "\r" not in done.stderr and "\x1b" not in done.stderr  # not a terminal: no live line
    assert done.stdout.splitlines()[-1].startswith(f"scored ({name} sandbox, ")

    quiet = evaluate(command(good, hidden, tmp_path / "r2", db, "--quiet"), tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    final = rf"scored \({name} sandbox, [\d.]+ s\); recorded on {re.escape(str(db))}; run folder: .*/r2"
    assert re.fullmatch(final, quiet.stdout.splitlines()[-1]), quiet.stdout
    assert [line for line in quiet.stderr.splitlines() if "WARNING" not in line] == []
    crash = submission(tmp_path / "crash", "raise SystemExit('no model')\n")
    failed = evaluate(command(crash, hidden, tmp_path / "r3", db, "--quiet"), tmp_path)
    assert failed.returncode == 2
    lines = [line for line in failed.stderr.splitlines() if "WARNING" not in line]
    assert len(lines) == 2, failed.stderr
    assert lines[0].startswith("submission failed (") and lines[1].startswith("run folder: ")


HOSTILE_LOG = (
    "print('loading \\x1b[31mred\\x1b]0;owned title\\x07 \\x1b[2J\\u202eevil', flush=True)\n"
    "time.sleep(4)\n"
    "print('\\rstep 1/9', end='', flush=True)\n"
    "time.sleep(3)\n"
)


@pytest.mark.required_in_ci
def test_on_a_terminal_a_live_line_shows_the_time_and_the_last_log_line_without_its_escapes(hidden, tmp_path):
    slow = submission(tmp_path / "slow", HOSTILE_LOG + ANSWER)
    primary, secondary = pty.openpty()
    env = environment()
    args = command(slow, hidden, tmp_path / "run", tmp_path / "board.sqlite")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=secondary, cwd=tmp_path, env=env)
    os.close(secondary)
    seen = b""
    while True:
        ready, _, _ = select.select([primary], [], [], 120)
        if not ready:
            break
        try:
            chunk = os.read(primary, 4096)
        except OSError:  # the terminal's other end is closed: the run is over
            break
        if not chunk:
            break
        seen += chunk
    os.close(primary)
    assert proc.wait(timeout=60) == 0, seen.decode(errors="replace")
    text = seen.decode()
    # The live line: redrawn in place, with the time against the limit and the last log line,
    # its escapes and its right-to-left override shown as `?`.
    shown = r"loading \?\[31mred\?\]0;owned title\? \?\[2J\?evil"
    assert re.search(r"\r\x1b\[Krunning: \d+ s of 60 s \| " + shown, text), text
    assert re.search(r"\r\x1b\[Krunning: \d+ s of 60 s \| step 1/9", text), text
    # The only escape on the terminal is the live line's own erase.
    assert text.count("\x1b") == text.count("\x1b[K"), text
    assert "\u202e" not in text and "\x07" not in text
    # The stage lines stand on lines of their own, the live line erased before each.
    assert re.search(r"\r\x1b\[Kmura evaluate: ran for \d+\.\d s: exit code 0\r?\n", text), text
