"""A campaign kept in blocks (`structure="blocks"`) against the same campaign kept dense.

Both are driven with the same clips, labels, pending tasks, refits and refinements; the dense
one is the reference (its own tests check it against quadrature, Monte Carlo and botorch).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine import Campaign, CampaignConfig, Judgment, Outcome
from engine.selection import NoEligibleTaskError

ATOL = 1e-9
SEED = 0
CRITERIA = ("alignment", "fineness", "safety")


def config(structure: str, **changes: object) -> CampaignConfig:
    settings: dict[str, object] = {
        "criteria": CRITERIA,
        "pair_scope": "group",
        "tie_margin": 0.3,
        "emoji_thresholds": (-1.0, 0.0, 1.0),
        "lapse_prior": (9.0, 1.0),
        "learn_rater_noise": True,
        "refit_prior_at": (),
        "structure": structure,
    }
    settings.update(changes)
    return CampaignConfig(**settings)  # type: ignore[arg-type]


def clips(rng: np.random.Generator, count: int, first_group: int, n_groups: int):
    """Scores with holes, prompt groups and one context per prompt."""
    scores = rng.normal(size=(count, len(CRITERIA))).round(3).tolist()
    for row in scores:
        if rng.random() < 0.2:
            row[int(rng.integers(len(CRITERIA)))] = None
    group = [f"p{first_group + int(g)}" for g in rng.integers(0, n_groups, count)]
    context = ["sports" if int(g[1:]) % 3 == 0 else "animals" for g in group]
    return scores, context, group


def answer(task, truth: np.ndarray, rng: np.random.Generator) -> Judgment:
    """A noisy rater's answer to a task from the true qualities."""
    noise = rng.normal()
    if task.is_pair:
        z = truth[task.first] - truth[task.second] + noise
        outcome = Outcome.TIE if abs(z) < 0.3 else (Outcome.WIN if z > 0 else Outcome.LOSS)
        return Judgment.pair(task.rater, task.first, task.second, outcome)
    level = int(np.searchsorted([-1.0, 0.0, 1.0], truth[task.first] + noise))
    return Judgment.rating(task.rater, task.first, level)


def assert_same(blocks: Campaign, dense: Campaign) -> None:
    mine, theirs = blocks.leaderboard(0.9), dense.leaderboard(0.9)
    torch.testing.assert_close(mine.mean, theirs.mean, atol=ATOL, rtol=0)
    torch.testing.assert_close(mine.sd, theirs.sd, atol=ATOL, rtol=0)
    assert torch.equal(mine.rank, theirs.rank)
    w_mine, w_theirs = blocks.weights(), dense.weights()
    torch.testing.assert_close(w_mine.mean, w_theirs.mean, atol=ATOL, rtol=0)
    torch.testing.assert_close(w_mine.context_cov, w_theirs.context_cov, atol=ATOL, rtol=0)
    assert blocks.expected_kendall_tau() == pytest.approx(dense.expected_kendall_tau(), abs=ATOL)
    torch.testing.assert_close(blocks.posterior.cov, dense.posterior.cov, atol=ATOL, rtol=0)
    for rater, reliability in dense.rater_reliability().items():
        assert blocks.rater_reliability()[rater].keep == pytest.approx(reliability.keep, abs=1e-9)


def test_a_campaign_in_blocks_is_the_dense_campaign_throughout():
    """Clips (missing scores, two contexts, prompts) added before and after labels, pairs and
    ratings from four raters with learned noise and lapses, pending tasks, EP and replay: the
    same posterior, read-outs and choices."""
    rng = np.random.default_rng(SEED)
    dense, blocks = (
        Campaign(config("dense"), device="cpu"),
        Campaign(config("blocks"), device="cpu"),
    )
    scores, context, group = clips(rng, 30, 0, 8)
    for campaign in (dense, blocks):
        campaign.add_clips(scores, contexts=context, groups=group)
    truth = rng.normal(size=200)
    held = []
    for step in range(70):
        rater = f"r{step % 4}"
        tasks = dense.next_tasks(rater, count=2)  # a batch of pairs, or one rating
        mine = blocks.next_tasks(rater, count=2, hold=False)
        assert [t.gain for t in mine] == pytest.approx([t.gain for t in tasks], abs=1e-9)
        for task in tasks:
            blocks.hold(task)
        held += tasks
        for _ in range(min(len(held), 1 + step % 2)):  # the oldest held tasks; some stay
            answered = held.pop(0)
            judgment = answer(answered, truth, rng)
            for campaign in (dense, blocks):
                campaign.observe([judgment], [answered.id])
        if step == 30:  # new prompts (one in a new context) and clips for old prompts
            more, more_context, more_group = clips(rng, 8, 6, 4)
            more_context[0] = "people"
            more_group[0] = "p-new"
            for campaign in (dense, blocks):
                campaign.add_clips(more, contexts=more_context, groups=more_group)
    assert len(dense.log) > 60
    assert_same(blocks, dense)
    assert blocks.probability_better(0, 5) == pytest.approx(dense.probability_better(0, 5))
    assert blocks.predict(1, 2, "r1") == pytest.approx(dense.predict(1, 2, "r1"), abs=ATOL)
    for campaign in (dense, blocks):
        campaign.refine()
    assert_same(blocks, dense)
    again = blocks.replay()
    assert torch.equal(again.leaderboard().mean, blocks.leaderboard().mean)
    assert torch.equal(again.posterior.cov, blocks.posterior.cov)


def test_an_empirical_bayes_refit_finds_what_the_dense_campaign_finds():
    """The ADF evidence the refit maximises is the dense campaign's to 1e-9; the optimiser's
    finite-difference path then lands within 1e-6 of it (rounding moves its steps), and the
    refitted posteriors agree as closely."""
    rng = np.random.default_rng(7)
    dense, blocks = (
        Campaign(config("dense"), device="cpu"),
        Campaign(config("blocks"), device="cpu"),
    )
    scores, context, group = clips(rng, 30, 0, 8)
    truth = rng.normal(size=30)
    for campaign in (dense, blocks):
        campaign.add_clips(scores, contexts=context, groups=group)
    for step in range(60):
        task = dense.next_tasks(f"r{step % 3}")[0]
        dense.release(task.id)
        judgment = answer(task, truth, rng)
        for campaign in (dense, blocks):
            campaign.observe([judgment])
    fits = [campaign.fit_prior() for campaign in (dense, blocks)]
    assert fits[1].start_log_evidence == pytest.approx(fits[0].start_log_evidence, abs=1e-9)
    assert fits[1].log_evidence == pytest.approx(fits[0].log_evidence, abs=1e-7)
    for name in ("weight_scale", "context_scale", "residual_scale"):
        mine, theirs = getattr(fits[1].scales, name), getattr(fits[0].scales, name)
        # abs: a scale fitted near its floor sits where the evidence is flat in it
        assert mine == pytest.approx(theirs, rel=1e-5, abs=1e-6)
    torch.testing.assert_close(
        blocks.leaderboard().mean, dense.leaderboard().mean, atol=1e-5, rtol=0
    )
    again = blocks.replay()  # the refit's values are replayed, not re-fitted
    assert again.config.prior == blocks.config.prior
    assert torch.equal(again.leaderboard().mean, blocks.leaderboard().mean)


def test_ratings_and_batches_choose_as_the_dense_campaign():
    rng = np.random.default_rng(3)
    dense = Campaign(config("dense", refit_prior_at=()), device="cpu")
    blocks = Campaign(config("blocks", refit_prior_at=()), device="cpu")
    scores, context, group = clips(rng, 24, 0, 6)
    for campaign in (dense, blocks):
        campaign.add_clips(scores, contexts=context, groups=group)
    for campaign in (dense, blocks):
        campaign.observe_pair(0, next(i for i in range(1, 24) if group[i] == group[0]), "win")
    batch = dense.next_pairs("a", count=5)
    mine = blocks.next_pairs("a", count=5, hold=False)
    assert [t.gain for t in mine] == pytest.approx([t.gain for t in batch], abs=1e-9)
    for task in batch:
        blocks.hold(task)
    rating = dense.next_rating("b")
    mine_rating = blocks.next_rating("b", hold=False)
    assert mine_rating.first == rating.first
    assert mine_rating.gain == pytest.approx(rating.gain, abs=1e-9)


def test_blocks_refuse_what_they_cannot_hold():
    with pytest.raises(ValueError, match='pair_scope="group"'):
        CampaignConfig(structure="blocks")
    with pytest.raises(ValueError, match="structure must be"):
        CampaignConfig(structure="sparse", pair_scope="group")  # type: ignore[arg-type]
    campaign = Campaign(config("blocks"), device="cpu")
    campaign.add_clips([[0.1, 0.2, 0.3]] * 4, contexts=["a", "a", "b", "b"], groups=[1, 1, 2, 2])
    with pytest.raises(ValueError, match="different prompt groups"):
        campaign.observe(
            [Judgment.pair("r", 0, 1, Outcome.WIN), Judgment.pair("r", 0, 2, Outcome.WIN)]
        )
    assert campaign.log == []  # the batch's valid first label was not applied either
    with pytest.raises(ValueError, match="share its context"):
        campaign.add_clips([[0.0, 0.0, 0.0]], contexts=["b"], groups=[1])
    assert campaign.n_items == 4
    campaign.observe_pair(0, 1, "win")
    for _ in range(2):
        task = campaign.next_pairs("r")[0]
        campaign.observe_pair(task.first, task.second, "loss", rater="r", task_id=task.id)
    with pytest.raises(NoEligibleTaskError):
        campaign.next_pairs("r")
    assert math.isfinite(campaign.expected_kendall_tau())


def test_a_dense_campaign_past_its_limit_says_how_to_go_on():
    campaign = Campaign(CampaignConfig(criteria=()), device="cpu")
    campaign.add_clips(count=10)
    with pytest.raises(ValueError, match='structure="blocks"'):
        campaign.add_clips(count=20_000)
    assert campaign.n_items == 10
    blocks = Campaign(config("blocks", criteria=()), device="cpu")
    blocks.add_clips(count=30_000, groups=[k // 4 for k in range(30_000)])
    assert blocks.n_items == 30_000
    assert blocks.leaderboard().mean.shape == (30_000,)


def test_a_label_that_answers_no_task_renews_the_kept_shrink():
    """With tasks pending, a label that answers none of them (the pending set unchanged)
    still changes the posterior: the next choice's gains are the dense campaign's."""
    rng = np.random.default_rng(11)
    config_args = {"refit_prior_at": (), "emoji_thresholds": None}
    dense = Campaign(config("dense", **config_args), device="cpu")
    blocks = Campaign(config("blocks", **config_args), device="cpu")
    scores, context, group = clips(rng, 24, 0, 6)
    for campaign in (dense, blocks):
        campaign.add_clips(scores, contexts=context, groups=group)
    for task in dense.next_pairs("holder", count=4):
        blocks.hold(task)
    truth = rng.normal(size=24)
    for _ in range(5):
        mine = blocks.next_pairs("asker", count=2, hold=False)
        theirs = dense.next_pairs("asker", count=2, hold=False)
        assert [t.gain for t in mine] == pytest.approx([t.gain for t in theirs], abs=1e-9)
        judgment = answer(theirs[0], truth, rng)
        for campaign in (dense, blocks):
            campaign.observe([judgment])


def test_a_campaign_in_blocks_without_clips_has_no_task_then_chooses_once_clips_come():
    """Asked before any clip (as a service asks at start), it says nothing is eligible and
    reads an empty leaderboard, instead of reading a border block that does not exist yet."""
    campaign = Campaign(config("blocks"))
    with pytest.raises(NoEligibleTaskError):
        campaign.next_pairs(None, 2)
    with pytest.raises(NoEligibleTaskError):
        campaign.next_rating(None)
    assert campaign.leaderboard(0.9).mean.shape == (0,)
    rng = np.random.default_rng(SEED)
    scores, contexts, groups = clips(rng, 8, 0, 2)
    campaign.add_clips(scores, contexts=contexts, groups=groups)
    (task,) = campaign.next_pairs(None, 1)
    assert campaign.groups[task.question.first] == campaign.groups[task.question.second]


def test_the_expected_tau_in_blocks_is_the_dense_campaigns():
    """`expected_kendall_tau` of a campaign in blocks (read from each prompt's block) equals
    the dense campaign's to 1e-10: prompts of unequal size, one clip alone in its prompt,
    missing scores, two contexts, and clips, a prompt and a context added after labels."""
    rng = np.random.default_rng(11)
    dense, blocks = (
        Campaign(config("dense"), device="cpu"),
        Campaign(config("blocks"), device="cpu"),
    )
    scores, context, group = clips(rng, 29, 0, 7)
    scores.append([0.5, None, -0.2])
    context.append("animals")
    group.append("alone")
    truth = rng.normal(size=40)

    def label(count: int) -> None:
        members: dict[str, list[int]] = {}
        for clip, name in enumerate(group):
            members.setdefault(name, []).append(clip)
        prompts = [listed for listed in members.values() if len(listed) > 1]
        for _ in range(count):
            first, second = rng.choice(prompts[int(rng.integers(len(prompts)))], 2, replace=False)
            won = truth[first] - truth[second] + rng.normal() > 0
            outcome = Outcome.WIN if won else Outcome.LOSS
            judgment = Judgment.pair("r", int(first), int(second), outcome)
            for campaign in (dense, blocks):
                campaign.observe([judgment])

    for campaign in (dense, blocks):
        campaign.add_clips(scores, contexts=context, groups=group)
    label(25)
    more, more_context, more_group = clips(rng, 8, 5, 4)
    more_context[0], more_group[0] = "people", "p-new"
    for campaign in (dense, blocks):
        campaign.add_clips(more, contexts=more_context, groups=more_group)
    group += more_group
    label(15)
    sizes = np.unique(group, return_counts=True)[1]
    assert sizes.min() == 1 and len(set(sizes.tolist())) > 2
    assert blocks.expected_kendall_tau() == pytest.approx(dense.expected_kendall_tau(), abs=1e-10)
