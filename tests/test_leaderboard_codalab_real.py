"""The real MURA leaderboard regenerated whole: the CodaLab dump the MURA page was built from
(out-v1.1.json) imported, rendered with `--keep all`, and compared with the page's own ranked list
(results-v1.1.json), when they are on this machine.

Where they come from: $MURA_CODALAB_DUMP (out-v1.1.json, with results-v1.1.json beside it), else a
git mirror of the MURA site (stanfordmlgroup.github.io) at $MURA_SITE_MIRROR or in a `.mirror`
folder above the project, at the "Update MURA 3/25" commit. Third-party data: never copied into the
project."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from leaderboard_helpers import ROOT, mura

from scorer.leaderboard import records

SITE = "stanfordmlgroup+stanfordmlgroup.github.io/repo"
COMMIT = "37d59eb"  # Update MURA 3/25 (2019): the dump and the page's list of that day
FILES = ("out-v1.1.json", "results-v1.1.json")

pytestmark = pytest.mark.real_data


def _mirror() -> Path | None:
    if os.environ.get("MURA_SITE_MIRROR"):
        return Path(os.environ["MURA_SITE_MIRROR"])
    return next((p / ".mirror" / SITE for p in ROOT.parents if (p / ".mirror" / SITE).is_dir()), None)


@pytest.fixture(scope="module")
def real_site(tmp_path_factory) -> tuple[Path, Path]:
    """(the dump, the page's ranked list), or a skip when neither source is here."""
    if os.environ.get("MURA_CODALAB_DUMP"):
        dump = Path(os.environ["MURA_CODALAB_DUMP"])
        return dump, dump.with_name(FILES[1])
    mirror = _mirror()
    if mirror is None or shutil.which("git") is None:
        pytest.skip("the MURA site's CodaLab dump is not on this machine (set MURA_CODALAB_DUMP)")
    folder = tmp_path_factory.mktemp("mura-site")
    for name in FILES:
        shown = subprocess.run(
            ["git", "-C", str(mirror), "show", f"{COMMIT}:competitions/mura/{name}"], capture_output=True
        )
        if shown.returncode != 0:
            pytest.skip(f"the MURA site mirror {mirror} has no {name} at {COMMIT}")
        (folder / name).write_bytes(shown.stdout)
    return folder / FILES[0], folder / FILES[1]


def _tokens(description: str) -> list[str]:
    return [t.strip("-–—,;:/|") for t in re.split(r"[\s()]+", description) if t.strip("-–—,;:/|")]


def test_the_real_dump_regenerates_every_entry_and_rank_of_the_mura_page(real_site, tmp_path):
    dump, page = real_site
    db = tmp_path / "lb.sqlite"
    items = json.loads(dump.read_text())["leaderboard"]
    imported = mura("leaderboard", "import-codalab", dump, "--db", db)
    assert imported.returncode == 0, imported.stderr
    # Every entry with an overall score (a number, or null: recorded and left off) is imported;
    # those without one are skipped, each with a line on stderr.
    with_score = sum("overall_mean" in (i.get("scores") or {}) for i in items)
    assert f"imported {with_score} entries" in imported.stdout
    skipped = re.findall(r"leaderboard\[\d+\].*; skipped$", imported.stderr, re.M)
    assert len(skipped) == len(items) - with_score
    guessed = {int(i) for i in re.findall(r"leaderboard\[(\d+)\][^:]*: guessed the split", imported.stderr)}
    assert len(guessed) + len(skipped) == len(imported.stderr.splitlines())

    rendered = mura("leaderboard", "render", "--db", db, "--keep", "all", "--format", "json")
    assert rendered.returncode == 0, rendered.stderr
    kit = json.loads(rendered.stdout)["entries"]
    ranked = [e for e in json.loads(page.read_text()) if "rank" in e]
    # The same entries with the same ranks (the page lists ties in another order).
    assert Counter((e["submitter"], e["submitted"], e["kappa"], e["rank"]) for e in kit) == Counter(
        (e["user"], records.unix_iso(e["date"]), e["kappa"], e["rank"]) for e in ranked
    )
    by_entry = {
        (i["submission"]["user_name"], records.unix_iso(i["submission"]["created"])): n
        for n, i in enumerate(items)
    }
    on_page = {(e["user"], records.unix_iso(e["date"])): e for e in ranked}
    for entry in kit:
        index = by_entry[entry["submitter"], entry["submitted"]]
        description = items[index]["submission"]["description"] or ""
        # Nothing the participant typed is lost from the Model cell ...
        assert all(token in entry["entry"] for token in _tokens(description)), (description, entry["entry"])
        assert entry["interval_source"] == "codalab"
        if index in guessed:
            continue
        # ... and where the kit did not have to guess, it splits as the page did.
        shown = on_page[entry["submitter"], entry["submitted"]]
        name = entry["model"] or entry["submitter"] or "null"  # the page showed null for no user name
        assert (name, entry["institution"] or "", entry["link"]) == (
            shown["model_name"],
            shown["institution"],
            shown.get("link"),
        )
