"""Keys of tasks, by which the runtime's collaborators count who holds, answered or skipped what:
a pair's `(low, high)` positions, a rating's `(clip, NO_SECOND)`, a K-set's sorted positions."""

from __future__ import annotations

from collections import Counter

from engine.questions import NO_SECOND, KSet, Question


def task_key(first: int, second: int) -> tuple[int, int]:
    """(low, high) for a pair in either order; (clip, NO_SECOND) for an emoji rating."""
    if second == NO_SECOND:
        return (first, NO_SECOND)
    return (min(first, second), max(first, second))


def question_key(question: Question) -> tuple[int, ...]:
    """`task_key` of a pair or a rating; a K-set's clip positions, sorted (K >= 3 of them, so
    never a pair's key)."""
    if isinstance(question, KSet):
        return tuple(sorted(question.items))
    return task_key(*question.direction)


def pair_keys(keys: set[tuple[int, ...]] | Counter[tuple[int, ...]]) -> list[tuple[int, int]]:
    """The pairs among task keys (no rating, no K-set), sorted: what the engine bars."""
    return sorted((k[0], k[1]) for k in keys if len(k) == 2 and k[1] != NO_SECOND)


def kset_keys(keys: set[tuple[int, ...]] | Counter[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """The K-sets among task keys, sorted."""
    return sorted(k for k in keys if len(k) > 2)
