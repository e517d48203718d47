"""fair_shares: how many jobs a claim asks each queue for (pgq._worker.claimer)."""

from __future__ import annotations

import doctest

from pgq._worker import claimer
from pgq._worker.claimer import fair_shares


def test_its_examples_hold() -> None:
    assert doctest.testmod(claimer, raise_on_error=True).attempted >= 4


def test_nothing_free_or_no_queue_asks_nothing() -> None:
    assert fair_shares(0, ["a"], set()) == []
    assert fair_shares(5, [], set()) == []


def test_equal_shares_round_up_and_rotate() -> None:
    assert fair_shares(10, ["a", "b", "c"], set()) == [("a", 4), ("b", 4), ("c", 4)]
    for rotation in range(6):
        first = fair_shares(10, ["a", "b", "c"], set(), rotation=rotation)[0][0]
        assert first == "abc"[rotation % 3]


def test_backlogged_queues_split_what_the_reserve_leaves_and_the_rest_ask_for_one() -> None:
    wants = dict(fair_shares(100, ["f1", "f2", "q1", "q2"], {"f1", "f2"}, reserve=4))
    assert wants == {"f1": 48, "f2": 48, "q1": 1, "q2": 1}


def test_a_backlog_never_takes_the_reserved_slots() -> None:
    # Four free, four reserved: the flood asks for nothing, the quiet queue still may.
    assert fair_shares(4, ["flood", "quiet"], {"flood"}, reserve=4) == [("quiet", 1)]
    assert fair_shares(5, ["flood"], {"flood"}, reserve=4) == [("flood", 1)]
