"""The MURA page's ranking rules (SPEC §5): order, shared ranks, three decimals, the threshold,
the radiologist row, and which entries each submitter keeps."""

from __future__ import annotations

import copy

import pytest
from leaderboard_helpers import score_result

from scorer.errors import HostError
from scorer.leaderboard import rank
from scorer.leaderboard.rank import Scored
from scorer.leaderboard.render import to_markdown
from scorer.leaderboard.store import Entry, open_store

N_SCORES = 24


def entry(i: int, kappa: float | None, submitted: str = "2018-07-01", submitter: str | None = None) -> Scored:
    return Scored(
        i,
        submitter or f"user{i}",
        f"model{i}",
        None,
        None,
        f"{submitted}T00:00:00Z",
        (kappa,) + (None,) * (N_SCORES - 1),
    )


def ranks(rows: list[rank.Row]) -> list[tuple[int, int]]:
    return [(row.rank, row.entry.id) for row in rows]


def test_highest_kappa_first_and_equal_kappas_share_a_rank():
    entries = [
        entry(1, 0.81),
        entry(2, 0.843),
        entry(3, 0.81),
        entry(4, 0.79),
        entry(5, 0.834),
        entry(6, 0.81),
    ]
    rows, _ = rank.rank(entries)
    # 1, 2, 3, 3, 3, 4: the next lower kappa gets the previous rank plus one (not 6)
    assert ranks(rows) == [(1, 2), (2, 5), (3, 1), (3, 3), (3, 6), (4, 4)]


def test_ranks_use_full_precision_so_equal_displays_can_differ_in_rank():
    entries = [entry(1, 0.7641), entry(2, 0.7644), entry(3, 0.7644)]
    rows, _ = rank.rank(entries)
    assert ranks(rows) == [(1, 2), (1, 3), (2, 1)]
    board = rank.Board(rows, None, [], 0.5, "all")
    lines = to_markdown(board).splitlines()[2:]
    assert [line.split(" | ")[-1] for line in lines] == ["0.764 |"] * 3  # three decimals, ranks 1, 1, 2
    assert [line.split(" | ")[0] for line in lines] == ["| 1", "| 1", "| 2"]


def test_equal_kappas_are_listed_earliest_submission_first_then_first_recorded():
    entries = [entry(1, 0.8, "2018-09-01"), entry(2, 0.8, "2018-06-01"), entry(3, 0.8, "2018-09-01")]
    rows, _ = rank.rank(entries)
    assert ranks(rows) == [(1, 2), (1, 1), (1, 3)]


def test_invalid_kappas_and_those_below_the_threshold_are_left_off():
    entries = [
        entry(1, 0.6),
        entry(2, None),
        entry(3, 0.49999),
        entry(4, 0.5),
        entry(5, float("nan")),
        entry(6, -0.2),
    ]
    rows, left_off = rank.rank(entries)
    assert ranks(rows) == [(1, 1), (2, 4)]  # 0.5 itself stays, as on the MURA page (kappa < 0.5 is "too low")
    assert left_off == {"invalid_kappa": 2, "below_threshold": 2}
    rows, left_off = rank.rank(entries, threshold=-1.0)
    assert [row.entry.id for row in rows] == [1, 4, 3, 6]
    assert left_off == {"invalid_kappa": 2}


@pytest.mark.parametrize("threshold", [1.5, -2, float("nan")])
def test_a_threshold_outside_kappa_is_refused(threshold):
    with pytest.raises(HostError, match="--threshold"):
        rank.rank([entry(1, 0.7)], threshold=threshold)


def test_keep_all_best_or_latest():
    entries = [
        entry(1, 0.70, "2018-06-01", "ann"),
        entry(2, 0.80, "2018-07-01", "ann"),
        entry(3, 0.60, "2018-08-01", "ann"),  # ann's latest
        entry(4, 0.75, "2018-06-15", "ben"),
        entry(5, 0.75, "2018-06-10", "ben"),  # ben's best: the earlier of two equal kappas
        entry(6, 0.40, "2018-09-01", "cy"),  # cy's latest is below the threshold
        entry(7, 0.90, "2018-05-01", "cy"),
    ]
    every, _ = rank.rank(entries, keep="all")
    assert len(every) == 6  # all but the 0.40
    best, left = rank.rank(entries, keep="best")
    assert ranks(best) == [(1, 7), (2, 2), (3, 5)]
    assert left == {"not_kept": 4}
    latest, left = rank.rank(entries, keep="latest")
    assert ranks(latest) == [(1, 4), (2, 3)]
    assert left == {"below_threshold": 1, "not_kept": 4}
    with pytest.raises(HostError, match="--keep: expected one of all, best, latest"):
        rank.rank(entries, keep="first")


def test_anonymous_entries_are_never_taken_for_one_submitter():
    # CodaLab entries without a user name: nothing says two are the same person's.
    anonymous = [
        Scored(1, None, None, None, None, "2018-07-01T00:00:00Z", (0.76,) + (None,) * 23),
        Scored(2, None, None, None, None, "2018-08-01T00:00:00Z", (0.66,) + (None,) * 23),
        entry(3, 0.7, "2018-09-01", "he_j"),  # his latest
        entry(4, 0.8, submitter="he_j"),
    ]
    for keep in ("best", "latest"):
        rows, left = rank.rank(anonymous, keep=keep)
        assert sorted(row.entry.id for row in rows) == [1, 2, 4 if keep == "best" else 3], keep
        assert left == {"not_kept": 1}


# --- the board of a real store ------------------------------------------------------------------


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scores")
    return [
        score_result(folder, accuracy, seed) for accuracy, seed in [(0.95, 1), (0.9, 2), (0.85, 3), (0.7, 4)]
    ]


def test_a_store_board_ranks_real_results_with_the_best_radiologist_first(tmp_path, results):
    with open_store(tmp_path / "lb.sqlite") as store:
        for i, result in enumerate(results):
            store.add_result(result, Entry(f"team{i}", submitted=f"2018-0{i + 1}-01"))
        store.add_result(results[1], Entry("copycat", submitted="2018-09-01"))  # the same kappa as team1
        store.add_failure("predict.py exited with code 1", Entry("team9"))
        board = rank.build(store)
    kappas = [r["Overall_Mean"] for r in results]
    shown = sorted([k for k in kappas + [kappas[1]] if k >= 0.5], reverse=True)
    assert [row.entry.kappa for row in board.rows] == shown
    tie = [row for row in board.rows if row.entry.kappa == kappas[1]]
    assert [row.entry.submitter for row in tie] == ["team1", "copycat"] and tie[0].rank == tie[1].rank
    assert board.left_off.get("failed") == 1
    best = max(
        (r["radiologists"][name]["Overall"]["kappa"], name) for r in results for name in r["radiologists"]
    )
    assert board.radiologist is not None
    assert board.radiologist.kappa == best[0] and board.radiologist.label.endswith(f"({best[1]})")
    assert [r.label for r in board.radiologists] == sorted(results[0]["radiologists"])
    assert (
        to_markdown(board).splitlines()[2]
        == f"|  |  | Best Radiologist Performance ({best[1]}) | {best[0]:.3f} |"
    )


def test_the_best_radiologist_is_taken_across_the_stored_baselines(tmp_path, results):
    better = copy.deepcopy(results[2])
    better["radiologists"]["Rad2"]["Overall"]["kappa"] = 0.97  # scored against a stronger panel
    with open_store(tmp_path / "lb.sqlite") as store:
        store.add_result(results[0], Entry("a"))
        store.add_result(better, Entry("b"))
        board = rank.build(store)
        assert board.radiologist is not None
        assert (board.radiologist.label, board.radiologist.kappa) == (
            "Best Radiologist Performance (Rad2)",
            0.97,
        )
        given = rank.build(
            store, radiologist_kappa=0.778, radiologist_label="Best Radiologist Performance Stanford"
        )
        assert given.radiologist is not None
        assert (given.radiologist.label, given.radiologist.kappa) == (
            "Best Radiologist Performance Stanford",
            0.778,
        )
        assert given.radiologists == [given.radiologist]


def test_a_store_without_baselines_has_no_radiologist_row(tmp_path, results):
    label_only = copy.deepcopy(results[0])
    label_only["radiologists"] = {}
    with open_store(tmp_path / "lb.sqlite") as store:
        store.add_result(label_only, Entry("a"))
        board = rank.build(store)
    assert board.radiologist is None and board.radiologists == []
    assert len(to_markdown(board).splitlines()) == 3
