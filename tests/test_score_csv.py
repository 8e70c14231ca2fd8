"""The CSV reading rules (scorer.formats): fields as RFC 4180 splits them, in every file the kit
reads; a participant's BOM and CRLF read with a note, as the official script read them; a
participant's file at most 64 MiB."""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path

import pytest
from harness_helpers import make_hidden_test, runner_or_skip

from scorer import formats
from scorer.errors import FormatNote, HostError, ParticipantError, notes_on_stderr
from scorer.formats import PROBABILITIES, csv_field, read_gold, read_predictions, read_rows, read_strata
from scorer.harness import bwrap_runner
from scorer.harness.evaluate import Submission, evaluate
from scorer.harness.sandbox import Limits, MiB
from scorer.settings import Settings

HAND = "MURA-v1.1/test/XR_HAND/patient00001"
TOO_LARGE = "is more than 1 MiB; expected a CSV file of at most 1 MiB;"


def write(path: Path, data: str | bytes) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def fields(path: Path, participant: bool = True) -> list[tuple[int, tuple[str, ...]]]:
    return [(row.line, row.fields) for row in read_rows(path, what="file", participant=participant)]


# --- fields as RFC 4180 says ------------------------------------------------------------------


def test_a_quoted_field_is_one_field_commas_quotes_and_all(tmp_path):
    text = '"a,b/study1/",1\n\n"plain/",0\n"say ""hi""/" , 1 \n  \nlast/,1'
    assert fields(write(tmp_path / "f.csv", text)) == [
        (1, ("a,b/study1/", "1")),
        (3, ("plain/", "0")),
        (4, ('say "hi"/', "1")),
        (6, ("last/", "1")),
    ]
    # `"path",1` is the row `path,1`, in every file the kit reads.
    quoted = write(tmp_path / "q.csv", f'"{HAND}/study1_positive/","1"\n"{HAND}/study2/",0\n')
    plain = write(tmp_path / "p.csv", f"{HAND}/study1_positive/,1\n{HAND}/study2/,0\n")
    assert read_predictions(quoted) == read_predictions(plain)
    assert read_gold(quoted).votes.tolist() == read_gold(plain).votes.tolist()
    assert read_gold(quoted).studies == read_gold(plain).studies
    studies = read_gold(plain).studies
    strata = write(tmp_path / "s.csv", f'"{HAND}/study1/","fracture;hardware"\n')
    assert read_strata(strata, studies) == {studies[0]: ("fracture", "hardware")}
    probabilities = write(tmp_path / "r.csv", f'"{HAND}/study1/","0.25"\n')
    assert read_predictions(probabilities, PROBABILITIES)[0].value == 0.25


def test_a_path_written_as_a_csv_field_reads_back_as_itself(tmp_path):
    paths = ["MURA-v1.1/a/", "a,b/", 'say "hi"/', "plain"]
    path = write(tmp_path / "f.csv", "".join(f"{csv_field(p)},1\n" for p in paths))
    assert [row.fields[0] for row in read_rows(path, what="file", participant=True)] == paths
    assert csv_field("MURA-v1.1/valid/XR_WRIST/patient11185/study1/") == (
        "MURA-v1.1/valid/XR_WRIST/patient11185/study1/"
    )


@pytest.mark.parametrize("participant", [True, False])
def test_a_quote_left_open_is_reported_on_the_line_that_opens_it(tmp_path, participant):
    path = write(tmp_path / "f.csv", 'a/,1\n"b/,1\nc/,0\nd/,1\n')
    error = ParticipantError if participant else HostError
    with pytest.raises(error, match=r"^file line 2: a quoted field runs on to line 4; .*close the quote"):
        read_rows(path, what="file", participant=participant)


def test_a_carriage_return_inside_a_line_and_an_endless_field_are_named(tmp_path):
    with pytest.raises(ParticipantError, match=r"^file line 2: a carriage return \(\\r\) inside the line"):
        read_rows(write(tmp_path / "cr.csv", "a/,1\nb/\r,1\n"), what="file", participant=True)
    with pytest.raises(ParticipantError, match=r"^file line 2: a field of more than 131,072 characters"):
        read_rows(write(tmp_path / "big.csv", "a/,1\n" + "x" * 200_000), what="file", participant=True)


# --- a BOM and CRLF: read, with a note -------------------------------------------------------


def test_a_participants_bom_and_crlf_are_read_with_one_note_and_an_organisers_silently(tmp_path):
    lf = write(tmp_path / "lf.csv", f"{HAND}/study1_positive/,1\n{HAND}/study2_negative/,0\n")
    windows = write(tmp_path / "w.csv", b"\xef\xbb\xbf" + lf.read_bytes().replace(b"\n", b"\r\n"))
    with pytest.warns(FormatNote) as notes:
        assert read_predictions(windows) == read_predictions(lf)
    [note] = notes
    assert str(note.message) == (
        "predictions file has a UTF-8 byte-order mark and Windows line endings (CRLF); read all the "
        "same, as the official script did (the contract asks for UTF-8 without a BOM and LF line endings)"
    )
    assert "_positive" not in str(note.message) and "patient" not in str(note.message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no note for the organiser's own files
        assert read_gold(windows).studies == read_gold(lf).studies


def test_notes_reach_stderr_as_one_line_each_and_other_warnings_as_before(tmp_path, capsys, monkeypatch):
    crlf = write(tmp_path / "w.csv", f"{HAND}/study1/,1\r\n")
    others = []
    monkeypatch.setattr(warnings, "showwarning", lambda message, *rest, **kw: others.append(str(message)))
    with notes_on_stderr():
        read_predictions(crlf)
        read_predictions(crlf)  # every note, not once per place
        warnings.simplefilter("always", UserWarning)
        warnings.warn("another kind", UserWarning, stacklevel=1)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and lines[0] == lines[1]
    assert lines[0].startswith("note: predictions file has Windows line endings (CRLF); read all the same")
    assert others == ["another kind"]


# --- the 64 MiB bound on a participant's file ------------------------------------------------


def test_a_participants_pipe_is_read_no_further_than_the_bound(tmp_path, monkeypatch):
    """Not a regular file, so no size to check first: at most the bound and one byte are read,
    and the writer finds the pipe closed."""
    monkeypatch.setattr(formats, "PARTICIPANT_FILE_LIMIT", MiB)
    fifo = tmp_path / "output.csv"
    os.mkfifo(fifo)
    written = []

    def writer() -> None:  # the submission's side of the pipe
        line = f"{HAND}/study1/,1\n".encode() * 1000
        with fifo.open("wb") as handle:
            try:
                while sum(written) < 4 * MiB:
                    handle.write(line)
                    handle.flush()
                    written.append(len(line))
            except BrokenPipeError:
                pass

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        with pytest.raises(ParticipantError, match=TOO_LARGE):
            read_predictions(fifo)
    finally:
        thread.join(timeout=30)
    assert sum(written) < 4 * MiB


# --- what the harness reads -----------------------------------------------------------------


CRLF_ANSWER = (
    "import sys\n"
    "from pathlib import Path\n"
    "images = [l for l in Path(sys.argv[1]).read_text().splitlines() if l]\n"
    "studies = dict.fromkeys(i.rpartition('/')[0] + '/' for i in images)\n"
    "Path(sys.argv[2]).write_text(''.join(f'{s},1\\r\\n' for s in studies), newline='')\n"
)


@pytest.mark.required_in_ci
def test_the_harness_reads_a_crlf_answer_with_the_scorers_reader_and_its_note(tmp_path):
    test_dir, gold, _ = make_hidden_test(tmp_path / "hidden", n=14)
    (tmp_path / "crlf").mkdir()
    (tmp_path / "crlf" / "predict.py").write_text(CRLF_ANSWER)
    runner = runner_or_skip("bwrap" if bwrap_runner.unavailable_reason() is None else "docker")
    limits = Limits(timeout=60, memory=512 * MiB, pids=64, log_cap=16 * 1024)
    entry = Submission(tmp_path / "crlf", "c")
    with pytest.warns(FormatNote, match="Windows line endings"):
        verdict = evaluate(entry, test_dir, gold, tmp_path / "run", runner, limits, Settings(resamples=50))
    assert verdict.ok, verdict.reason
