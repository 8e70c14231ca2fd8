"""The two programs a Codabench task runs, each a zip of its metadata.yaml and only the kit's
modules it imports (found in their source: also the imports inside functions), so that the
program carries its own code whatever kit the competition's image has.

- the scoring program: `python3 -m scorer.codabench /app/input /app/output` (scorer/codabench's
  metadata.yaml, as it is): the scorer's pipeline, not the harness or the leaderboard;
- the ingestion program: `python3 -m scorer.codabench.ingestion ...` with the command
  `mura codabench bundle` writes (the phase's time limit, the worker's data folder).
"""

from __future__ import annotations

import ast
import io
import time
import zipfile
from pathlib import Path

import scorer
from scorer.harness.anonymise import FIXED_MTIME

PACKAGE = "scorer"
SOURCES = Path(scorer.__file__).resolve().parent.parent  # the folder that holds scorer/
SCORING_ENTRY = ("scorer.codabench", "scorer.codabench.__main__")
INGESTION_ENTRY = ("scorer.codabench.ingestion",)
SCORING_METADATA = SOURCES / "scorer" / "codabench" / "metadata.yaml"
# The zip entries' time: the anonymised data's fixed mtime (2017-07-14), so that a bundle's
# programs are the same bytes each time and its data entries say nothing by their times.
ZIP_TIME = time.gmtime(FIXED_MTIME)[:6]


def source(module: str) -> Path | None:
    """The kit's source file of `module` (a module or a package's __init__), or None."""
    base = SOURCES.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def imported(path: Path) -> set[str]:
    """The kit's modules a source file imports anywhere in it (`from scorer import report`
    counts when report is a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] == PACKAGE and source(name) is not None}


def module_closure(entries: tuple[str, ...]) -> list[str]:
    """Every kit module `entries` need, with their packages' __init__ modules, sorted."""
    seen: set[str] = set()
    todo = list(entries)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
        path = source(name)
        if path is None:
            raise FileNotFoundError(f"the kit's module {name} has no source file under {SOURCES}")
        todo.extend(imported(path))
    return sorted(seen)


def entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
    info.external_attr = 0o100444 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def program_zip(entries: tuple[str, ...], metadata: str) -> bytes:
    """A program: metadata.yaml and the modules `entries` need, at the zip's root."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(entry("metadata.yaml"), metadata)
        for module in module_closure(entries):
            path = source(module)
            assert path is not None
            archive.writestr(entry(path.relative_to(SOURCES).as_posix()), path.read_bytes())
    return buffer.getvalue()


def scoring_program() -> bytes:
    return program_zip(SCORING_ENTRY, SCORING_METADATA.read_text(encoding="utf-8"))


def ingestion_command(time_limit: float, worker_data: bool) -> str:
    """The ingestion program's command, in the worker's placeholders ($input is /app/input_data
    in the prediction step, $submission_program /app/ingested_program, $output /app/output)."""
    command = "python3 -m scorer.codabench.ingestion $input $submission_program $output"
    return command + f" --time-limit {time_limit:g}" + (" --worker-data /app/data" if worker_data else "")


def ingestion_program(time_limit: float, worker_data: bool) -> bytes:
    import yaml

    metadata = yaml.safe_dump(
        {
            "command": ingestion_command(time_limit, worker_data),
            "description": "MURA ingestion - runs predict.py input.csv output.csv and checks the answer",
        },
        sort_keys=False,
        width=200,
    )
    header = "# The MURA kit's ingestion program (scorer/codabench/ingestion.py); `mura codabench bundle`.\n"
    return program_zip(INGESTION_ENTRY, header + metadata)
