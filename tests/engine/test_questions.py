"""The question kinds (engine.questions): what each asks, its event, its answers, its key."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from engine import Campaign, CampaignConfig, Judgment
from engine.likelihoods import Outcome
from engine.questions import (
    NO_SECOND,
    QUESTION_KINDS,
    Criterion,
    KSet,
    Level,
    Pair,
    Question,
    question_of,
    question_of_key,
)
from engine.update import level_events, pair_events

THRESHOLDS = (-1.0, 0.0, 1.5)
clips = st.integers(0, 10_000)


def test_every_kind_is_registered_by_its_name() -> None:
    assert {"pair": Pair, "level": Level, "kset": KSet, "criterion": Criterion} == QUESTION_KINDS


@given(clips, clips)
def test_a_pair_is_one_question_in_either_order(i: int, j: int) -> None:
    if i == j:
        with pytest.raises(ValueError, match="two different clips"):
            Pair(i, j)
        return
    assert Pair(i, j).key == Pair(j, i).key != Level(i).key
    assert Pair(i, j) != Pair(j, i)  # but the direction (who "wins") is kept
    assert question_of(*Pair(i, j).direction) == Pair(i, j)
    assert question_of(*Level(i).direction) == Level(i)
    assert Level(i).direction == (i, NO_SECOND)


@pytest.mark.parametrize("bad", [(-1, 2), (2, -1)])
def test_negative_clips_are_refused(bad: tuple[int, int]) -> None:
    with pytest.raises(IndexError):
        Pair(*bad)
    with pytest.raises(IndexError):
        Level(-1)


@pytest.mark.parametrize("tie_margin", [0.0, 0.3])
def test_pair_intervals_match_the_event_builder(tie_margin: float) -> None:
    """A pair's answer gives the interval engine.update's pair events use (MATH.md §2)."""
    like = torch.zeros((), dtype=torch.float64)
    outcomes = [Outcome.WIN, Outcome.LOSS] + ([Outcome.TIE] if tie_margin else [])
    events = pair_events(
        [0] * len(outcomes),
        [1] * len(outcomes),
        outcomes,
        tie_margin=tie_margin,
        noise_sd=1.0,
        like=like,
    )
    for b, outcome in enumerate(outcomes):
        lo, hi = Pair(0, 1).interval(outcome, tie_margin, None)
        assert (lo, hi) == (float(events.lo[b]), float(events.hi[b]))
        assert Pair(0, 1).interval(outcome.value, tie_margin, None) == (lo, hi)
    assert Pair(0, 1).n_answers(tie_margin, None) == len(outcomes)


def test_level_intervals_match_the_event_builder() -> None:
    like = torch.zeros((), dtype=torch.float64)
    levels = list(range(len(THRESHOLDS) + 1))
    events = level_events([3] * len(levels), levels, thresholds=THRESHOLDS, noise_sd=1.0, like=like)
    for level in levels:
        lo, hi = Level(3).interval(level, 0.0, THRESHOLDS)
        assert (lo, hi) == (float(events.lo[level]), float(events.hi[level]))
    assert Level(3).interval(0, 0.0, THRESHOLDS)[0] == -math.inf
    assert Level(3).n_answers(0.0, THRESHOLDS) == len(levels)


@pytest.mark.parametrize(
    ("question", "answer", "tie_margin", "thresholds", "message"),
    [
        (Pair(0, 1), Outcome.TIE, 0.0, None, "tie"),
        (Pair(0, 1), 2, 0.3, THRESHOLDS, "comparison's answer"),
        (Pair(0, 1), None, 0.3, None, "comparison's answer"),
        (Level(0), Outcome.WIN, 0.0, THRESHOLDS, "level"),
        (Level(0), True, 0.0, THRESHOLDS, "level"),
        (Level(0), 1.5, 0.0, THRESHOLDS, "level"),
        (Level(0), 4, 0.0, THRESHOLDS, "0..3"),
        (Level(0), 1, 0.0, None, "no emoji scale"),
    ],
)
def test_impossible_answers_are_refused(
    question: Pair | Level,
    answer: object,
    tie_margin: float,
    thresholds: tuple[float, ...] | None,
    message: str,
) -> None:
    with pytest.raises(ValueError, match=message):
        question.interval(answer, tie_margin, thresholds)  # type: ignore[arg-type]


def test_a_campaign_takes_questions_and_hands_them_out() -> None:
    """Judgments carry a question and its answer; tasks carry the question asked; a rater is
    not asked a question they answered (by its key: a pair in either order)."""
    config = CampaignConfig(criteria=(), emoji_thresholds=THRESHOLDS, tie_margin=0.2)
    campaign = Campaign(config, device="cpu")
    campaign.add_clips(count=3)
    campaign.observe(
        [
            Judgment("r", Pair(1, 0), Outcome.TIE),
            Judgment("r", Pair(2, 0), Outcome.WIN),
            Judgment("r", Level(2), 3),
        ]
    )
    assert [j.question for j in campaign.log] == [Pair(1, 0), Pair(2, 0), Level(2)]
    # applied with the default noise, its event first among the clips' events
    assert campaign.log[0] == replace(Judgment.pair("r", 1, 0, "tie", noise_sd=1.0), event=0)
    (task,) = campaign.next_pairs("r")
    assert task.question.key == Pair(1, 2).key and task.is_pair
    rating = campaign.next_rating("r")
    assert rating.question in (Level(0), Level(1)) and not rating.is_pair
    assert rating.second == NO_SECOND
    with pytest.raises(TypeError, match="not a question"):
        campaign.observe([Judgment("r", (0, 1), Outcome.WIN)])  # type: ignore[arg-type]
    assert len(campaign.log) == 3


@pytest.mark.parametrize(
    "question",
    [Pair(3, 1), Level(2), Criterion(0, 4, "safety"), KSet((2, 5, 7), "best_worst")],
    ids=lambda q: q.kind,
)
def test_a_question_comes_back_from_its_key(question: Question) -> None:
    """`question_of_key` inverts `Question.key`: same kind, same key (a pair in key order)."""
    again = question_of_key(question.key)
    assert type(again) is type(question)
    assert again.key == question.key
    # clips come back in key order: a pair asked as (3, 1) is (1, 3)
    assert again == (Pair(1, 3) if isinstance(question, Pair) else question)


def test_the_campaign_reports_what_each_rater_answered_once_applied() -> None:
    """`answered_questions` is the task book's record of the labels applied, per rater: the
    questions `next_pairs` leaves out for them."""
    config = CampaignConfig(criteria=(), emoji_thresholds=THRESHOLDS, tie_margin=0.2)
    campaign = Campaign(config, device="cpu")
    campaign.add_clips(count=3)
    assert campaign.answered_questions() == {}
    campaign.observe(
        [
            Judgment("r", Pair(1, 0), Outcome.TIE),
            Judgment("s", Pair(2, 0), Outcome.WIN),
            Judgment("r", Level(2), 3),
            Judgment("r", Pair(0, 1), Outcome.WIN),  # the same question again: one record
        ]
    )
    answered = campaign.answered_questions()
    assert answered == {"r": (Level(2), Pair(0, 1)), "s": (Pair(0, 2),)}
    (task,) = campaign.next_pairs("r")
    assert task.question.key not in {q.key for q in answered["r"]}
