"""Priority groups and smooth weighted round robin: exact sequences and shares."""

from __future__ import annotations

from collections import Counter

import pytest

from aigw.backends.selector import Available, PrioritySelector


def everyone(index: int) -> bool:
    return True


def picks(selector: PrioritySelector, count: int, available: Available = everyone) -> str:
    letters = ""
    for _ in range(count):
        index = selector.pick(available)
        assert index is not None
        letters += "abcdefgh"[index]
    return letters


def test_the_exact_smooth_sequence_of_nginx() -> None:
    selector = PrioritySelector([1, 1, 1], [5, 1, 1])
    assert picks(selector, 21) == "aabacaa" * 3


def test_equal_weights_are_plain_round_robin() -> None:
    assert picks(PrioritySelector([1, 1, 1], [1, 1, 1]), 9) == "abc" * 3
    assert picks(PrioritySelector([1, 1], [7, 7]), 6) == "ab" * 3


@pytest.mark.parametrize("weights", [[3, 1], [50, 30, 20], [1, 2, 3, 4]])
def test_weighted_shares_over_ten_thousand_picks(weights: list[int]) -> None:
    selector = PrioritySelector([1] * len(weights), weights)
    counts = Counter(selector.pick(everyone) for _ in range(10_000))
    for index, weight in enumerate(weights):
        share = counts[index] / 10_000
        expected = weight / sum(weights)
        assert abs(share - expected) <= 0.05 * expected, (index, share, expected)
    # Smooth WRR is exact over every whole cycle of Σw picks, not only close.
    cycle = sum(weights)
    exact = Counter(selector.pick(everyone) for _ in range(cycle * 7))
    assert [exact[index] for index in range(len(weights))] == [w * 7 for w in weights]


def test_a_lower_priority_group_is_used_only_while_all_higher_ones_are_unavailable() -> None:
    # a: priority 1; b, c: priority 2; d: priority 3.
    selector = PrioritySelector([1, 2, 2, 3], [1, 1, 1, 1])
    down: set[int] = set()

    def available(index: int) -> bool:
        return index not in down

    assert picks(selector, 3, available) == "aaa"
    down.add(0)
    assert picks(selector, 4, available) == "bcbc"
    down.add(1)
    assert picks(selector, 2, available) == "cc"  # one member of the group still serves
    down.add(2)
    assert picks(selector, 2, available) == "dd"
    down.clear()  # the first group recovers: traffic returns to it at once
    assert picks(selector, 2, available) == "aa"


def test_lower_groups_are_not_even_asked_while_a_higher_one_serves() -> None:
    selector = PrioritySelector([1, 2], [1, 1])
    asked: list[int] = []

    def available(index: int) -> bool:
        asked.append(index)
        return True

    selector.pick(available)
    assert asked == [0]  # asking may half-open a breaker: only ask when it matters


def test_skipped_members_are_passed_over_and_nothing_left_is_none() -> None:
    selector = PrioritySelector([1, 1, 2], [1, 1, 1])
    assert selector.pick(everyone, skip=0b001) == 1
    assert selector.pick(everyone, skip=0b011) == 2
    assert selector.pick(everyone, skip=0b111) is None
    assert selector.pick(lambda index: False) is None


def test_the_preferred_member_wins_while_it_is_available_whatever_its_priority() -> None:
    selector = PrioritySelector([1, 2], [1, 1])
    assert selector.pick(everyone, preferred=1) == 1
    assert selector.pick(lambda index: index != 1, preferred=1) == 0
    assert selector.pick(everyone, skip=0b10, preferred=1) == 0


def test_members_that_become_unavailable_do_not_bank_their_turns() -> None:
    selector = PrioritySelector([1, 1], [1, 1])
    assert picks(selector, 4, lambda index: index == 0) == "aaaa"
    # b was out: it gets its normal turn back, not a burst of four.
    assert sorted(Counter(picks(selector, 6)).values()) == [3, 3]


def test_it_refuses_a_mismatched_or_oversized_member_list() -> None:
    with pytest.raises(ValueError, match="one priority and one weight"):
        PrioritySelector([1, 1], [1])
    with pytest.raises(ValueError, match="1 to 64"):
        PrioritySelector([1] * 65, [1] * 65)
