"""Gold questions (engine.gold): a known answer teaches only the rater's reliability."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from engine.campaign import Campaign, CampaignConfig, Judgment
from engine.gold import GoldPair
from engine.likelihoods import Outcome
from engine.questions import Pair

SEED = 0
KEEP_PRIOR = (9.0, 1.0)


def _campaign(n: int = 12, **overrides: object) -> Campaign:
    settings: dict[str, object] = dict(criteria=(), lapse_prior=KEEP_PRIOR)
    settings.update(overrides)
    campaign = Campaign(CampaignConfig(**settings), device="cpu")  # type: ignore[arg-type]
    campaign.add_clips(count=n)
    return campaign


def _gold_pairs(campaign: Campaign, count: int, seed: int = SEED) -> list[GoldPair]:
    """`count` distinct gold pairs, answers at random (win or loss)."""
    rng = np.random.default_rng(seed)
    n = campaign.n_items
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    chosen = rng.choice(len(pairs), size=count, replace=False)
    return [
        campaign.add_gold(*pairs[k], Outcome.WIN if rng.random() < 0.5 else Outcome.LOSS)
        for k in chosen
    ]


def _gold_judgment(rater: str, pair: GoldPair, answer: Outcome) -> Judgment:
    return Judgment(rater, Pair(pair.first, pair.second), answer, gold=pair.answer)


def test_gold_likelihood_matches_direct_computation() -> None:
    """The rater's grid after gold answers equals sum_k log(keep Z_k + (1 - keep) / L) with
    Z_k = P(z*_k + eps in I_k) computed directly (docs/MATH.md §3, gold paragraph)."""
    tie_margin, margin = 0.4, 3.0
    campaign = _campaign(tie_margin=tie_margin, learn_rater_noise=True, gold_margin=margin)
    golds = [
        campaign.add_gold(0, 1, Outcome.WIN),
        campaign.add_gold(2, 3, Outcome.LOSS),
        campaign.add_gold(4, 5, Outcome.TIE),
        campaign.add_gold(6, 7, Outcome.WIN),
    ]
    answers = [Outcome.WIN, Outcome.WIN, Outcome.TIE, Outcome.LOSS]
    campaign.observe([_gold_judgment("ann", g, a) for g, a in zip(golds, answers, strict=True)])
    grid = campaign._raters.grids["ann"][0]
    keep = grid.keep.numpy()[:, None]
    sigma = np.exp(grid.log_sigma.numpy())[None, :]
    intervals = {
        Outcome.WIN: (tie_margin, math.inf),
        Outcome.LOSS: (-math.inf, -tie_margin),
        Outcome.TIE: (-tie_margin, tie_margin),
    }
    points = {Outcome.WIN: margin, Outcome.LOSS: -margin, Outcome.TIE: 0.0}
    expected = np.zeros_like(keep * sigma)
    for gold, answer in zip(golds, answers, strict=True):
        lo, hi = intervals[answer]
        z_star = points[gold.answer] * campaign.config.noise_sd
        probability = norm.cdf((hi - z_star) / sigma) - norm.cdf((lo - z_star) / sigma)
        expected += np.log(keep * probability + (1 - keep) / 3)
    np.testing.assert_allclose(grid.log_likelihood.numpy(), expected, rtol=1e-10, atol=1e-12)
    assert campaign.rater_reliability()["ann"].labels == 4


def test_gold_never_moves_the_clips() -> None:
    """Posterior mean and covariance are bit-for-bit those without the gold answers, after
    ADF, after an EP refine and after a prior refit."""
    rng = np.random.default_rng(SEED)
    with_gold = _campaign(tie_margin=0.3, learn_rater_noise=True)
    without = _campaign(tie_margin=0.3, learn_rater_noise=True)
    golds = _gold_pairs(with_gold, 10)
    for step in range(6):
        ordinary = [
            Judgment.pair(
                f"r{k}",
                *rng.choice(12, size=2, replace=False).tolist(),
                Outcome.WIN if rng.random() < 0.6 else Outcome.LOSS,
                noise_sd=1.0,
                keep=0.9,
            )
            for k in range(5)
        ]
        gold = golds[step]
        with_gold.observe([*ordinary[:2], _gold_judgment("r0", gold, Outcome.WIN), *ordinary[2:]])
        without.observe(ordinary)
        assert torch.equal(with_gold.posterior.mean, without.posterior.mean)
        assert torch.equal(with_gold.posterior.cov, without.posterior.cov)
    with_gold.refine()
    without.refine()
    torch.testing.assert_close(with_gold.posterior.mean, without.posterior.mean, rtol=0, atol=0)
    with_gold.fit_prior(max_evaluations=20)
    without.fit_prior(max_evaluations=20)
    assert with_gold.config.prior == without.config.prior
    torch.testing.assert_close(with_gold.posterior.cov, without.posterior.cov, rtol=0, atol=0)


def test_random_clicker_is_flagged_and_honest_raters_are_not() -> None:
    """Flag rule (engine.reliability): P(keep < 1/2 | answers) > 1/2. Sixty gold answers at
    random flag random clickers; honest raters (noise at the campaign's default) are not."""
    rng = np.random.default_rng(SEED)
    campaign = _campaign(n=40, learn_rater_noise=True)
    golds = _gold_pairs(campaign, 60)
    judgments = []
    for rater in range(20):
        for gold in golds:
            z_star = 3.0 if gold.answer is Outcome.WIN else -3.0
            says_win = z_star + rng.normal() > 0
            answer = Outcome.WIN if says_win else Outcome.LOSS
            judgments.append(_gold_judgment(f"honest{rater}", gold, answer))
    for clicker in range(5):
        for gold in golds:
            answer = Outcome.WIN if rng.random() < 0.5 else Outcome.LOSS
            judgments.append(_gold_judgment(f"clicker{clicker}", gold, answer))
    campaign.observe(judgments)
    reliability = campaign.rater_reliability()
    assert all(reliability[f"clicker{c}"].flagged for c in range(5))
    assert not any(reliability[f"honest{r}"].flagged for r in range(20))


def test_gold_schedule_is_seeded_and_keeps_its_rate() -> None:
    campaign = _campaign(n=40, gold_rate=0.2, gold_seed=7)
    _gold_pairs(campaign, 50)

    def schedule(c: Campaign, rater: str) -> list[bool]:
        return [c.next_gold(rater, index=k, hold=False) is not None for k in range(600)]

    first = schedule(campaign, "ann")
    assert first == schedule(campaign, "ann")  # the same seed and requests: the same tasks
    share = sum(first) / len(first)
    assert abs(share - 0.2) < 4 * math.sqrt(0.2 * 0.8 / len(first))
    assert first != schedule(campaign, "bob")
    other = _campaign(n=40, gold_rate=0.2, gold_seed=8)
    _gold_pairs(other, 50)
    assert first != schedule(other, "ann")


def test_gold_tasks_never_repeat_and_stop_when_used_up() -> None:
    """Rate 1: the rater's first tasks are gold, each pair once (a pair they judged as an
    ordinary pair is not offered), then ordinary tasks follow."""
    campaign = _campaign(n=8, gold_rate=1.0)
    golds = _gold_pairs(campaign, 5)
    campaign.observe([Judgment.pair("ann", golds[0].first, golds[0].second, Outcome.WIN)])
    seen = []
    for _ in range(4):
        (task,) = campaign.next_tasks("ann")
        assert task.gold is not None
        assert campaign.pending == (task,)
        assert campaign._pending_tasks() == []  # a gold task shrinks no selection
        seen.append(task.question.key)
        campaign.observe([Judgment("ann", task.question, Outcome.WIN, gold=task.gold)], [task.id])
    assert len(set(seen)) == 4
    assert Pair(golds[0].first, golds[0].second).key not in seen
    (task,) = campaign.next_tasks("ann")
    assert task.gold is None
    # a gold task held for one rater is not offered to them twice at once
    (held,) = campaign.next_tasks("bob")
    again = campaign.next_gold("bob", index=99)
    assert again is None or again.question.key != held.question.key


def test_replay_reproduces_gold_answers_bit_for_bit() -> None:
    rng = np.random.default_rng(SEED)
    campaign = _campaign(n=10, learn_rater_noise=True, gold_rate=0.3)
    _gold_pairs(campaign, 12)
    for _ in range(40):
        rater = f"r{rng.integers(3)}"
        (task,) = campaign.next_tasks(rater)
        answer = Outcome.WIN if rng.random() < 0.5 else Outcome.LOSS
        campaign.observe([Judgment(rater, task.question, answer, gold=task.gold)], [task.id])
    assert any(j.gold is not None for j in campaign.log)
    fresh = campaign.replay()
    assert torch.equal(fresh.posterior.mean, campaign.posterior.mean)
    assert torch.equal(fresh.posterior.cov, campaign.posterior.cov)
    assert fresh.rater_reliability() == campaign.rater_reliability()
    assert fresh.gold_pairs == campaign.gold_pairs
    # the same gold pairs left to each rater: the same next gold tasks
    for rater in ("r0", "r1", "r2"):
        for index in range(20):
            mine = campaign.next_gold(rater, index=index, hold=False)
            theirs = fresh.next_gold(rater, index=index, hold=False)
            assert (mine is None) == (theirs is None)
            if mine is not None and theirs is not None:
                assert (mine.question, mine.gold) == (theirs.question, theirs.gold)


def test_bad_gold_input_changes_nothing() -> None:
    campaign = _campaign(n=4)
    with pytest.raises(IndexError):
        campaign.add_gold(0, 4, Outcome.WIN)
    with pytest.raises(ValueError, match="two different clips"):
        campaign.add_gold(1, 1, Outcome.WIN)
    with pytest.raises(ValueError, match="tie"):
        campaign.add_gold(0, 1, Outcome.TIE)
    assert campaign.gold_pairs == ()
    campaign.add_gold(0, 1, Outcome.WIN)
    campaign.add_gold(1, 0, Outcome.LOSS)  # the same pair, said the other way round
    with pytest.raises(ValueError, match="another answer"):
        campaign.add_gold(0, 1, Outcome.LOSS)
    assert campaign.gold_pairs == (GoldPair(0, 1, Outcome.WIN),)
    with pytest.raises(ValueError, match="lapse_prior"):
        CampaignConfig(criteria=(), gold_rate=0.1)
    with pytest.raises(ValueError, match="gold_rate"):
        CampaignConfig(criteria=(), lapse_prior=KEEP_PRIOR, gold_rate=1.5)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(st.lists(st.booleans(), min_size=1, max_size=12), st.sampled_from([1.0, 2.0, 3.0]))
def test_a_wrong_gold_answer_raises_the_random_probability(
    right_answers: list[bool], margin: float
) -> None:
    """With the noise fixed, a gold answer's likelihood is monotone in keep (decreasing for a
    wrong answer, increasing for a right one), so each wrong answer raises P(keep < 1/2) and
    each right one lowers it; and the clips never move."""
    campaign = _campaign(n=30, gold_margin=margin)
    golds = _gold_pairs(campaign, len(right_answers))
    before = campaign.posterior
    previous = None
    for gold, right in zip(golds, right_answers, strict=True):
        wrong = Outcome.LOSS if gold.answer is Outcome.WIN else Outcome.WIN
        campaign.observe([_gold_judgment("ann", gold, gold.answer if right else wrong)])
        now = campaign.rater_reliability()["ann"].probability_random
        if previous is not None:
            assert now < previous if right else now > previous
        previous = now
    assert torch.equal(campaign.posterior.mean, before.mean)
    assert torch.equal(campaign.posterior.cov, before.cov)
