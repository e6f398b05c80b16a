"""Which pool member gets the next request: priority groups, smooth weighted round robin.

Members are grouped by priority, lowest number first; a group is used only while every
member of all groups before it is unavailable (or already tried for this request). Within a
group the pick is nginx's smooth weighted round robin: each available member's running score
grows by its weight, the highest score wins and gives back the sum of the weights. Over any
Σw consecutive picks among the same members each gets exactly its weight, interleaved rather
than in runs (weights 5, 1, 1 → a a b a c a a), and equal weights are plain round robin.
Deterministic, so tests can assert the exact sequence.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

Available = Callable[[int], bool]


class PrioritySelector:
    __slots__ = ("_groups", "_scores", "_weights")

    def __init__(self, priorities: Sequence[int], weights: Sequence[int]) -> None:
        if len(priorities) != len(weights) or not 0 < len(weights) <= 64:
            raise ValueError("one priority and one weight per member, 1 to 64 members")
        self._weights = list(weights)
        self._scores = [0] * len(weights)
        # Members of a group keep their config order: it breaks ties between equal scores.
        self._groups = [
            tuple(index for index, priority in enumerate(priorities) if priority == level)
            for level in sorted(set(priorities))
        ]

    def pick(self, available: Available, skip: int = 0, preferred: int | None = None) -> int | None:
        """The index of the member to use, or None when none is available.

        `skip` is a bit mask of members not to use (tried already for this request);
        `preferred` (session affinity) wins whenever it is available and not skipped, whatever
        its priority: a session's state lives on that member.
        """
        if preferred is not None and not skip >> preferred & 1 and available(preferred):
            return preferred
        scores, weights = self._scores, self._weights
        for group in self._groups:
            best = -1
            total = 0
            for index in group:
                if skip >> index & 1 or not available(index):
                    continue
                weight = weights[index]
                scores[index] += weight
                total += weight
                if best < 0 or scores[index] > scores[best]:
                    best = index
            if best >= 0:
                scores[best] -= total
                return best
        return None
