"""Campaign: replay, clips added mid-campaign, standardisation, input validation, read-outs."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy.stats import norm

from engine.campaign import Campaign, CampaignConfig, Judgment
from engine.likelihoods import Outcome, pair_interval
from engine.questions import Pair
from engine.rater_book import RATER_REDERIVE_BUDGET, RATER_REFIT_BELOW
from engine.reliability import RaterGrid, rater_grid, rater_posterior
from engine.state import PriorScales, quality_prior
from engine.summaries import pair_marginal
from engine.update import cavity_moments

SEED = 0
CRITERIA = ("a", "b", "c")
EMOJI = (-1.0, 0.0, 1.0)
PRIOR = PriorScales(weight_scale=0.5, context_scale=0.25, residual_scale=1.0)


def _config(**overrides: object) -> CampaignConfig:
    settings: dict[str, object] = dict(criteria=CRITERIA, prior=PRIOR)
    settings.update(overrides)
    return CampaignConfig(**settings)  # type: ignore[arg-type]


def _campaign(n: int = 8, *, seed: int = SEED, **overrides: object) -> Campaign:
    rng = np.random.default_rng(seed)
    campaign = Campaign(_config(**overrides), device="cpu")
    scores = rng.normal(loc=5.0, scale=2.0, size=(n, len(campaign.config.criteria)))
    campaign.add_clips(scores.tolist(), contexts=["x" if k % 3 else "y" for k in range(n)])
    return campaign


def _snapshot(campaign: Campaign) -> tuple[torch.Tensor, torch.Tensor, int]:
    return campaign.posterior.mean.clone(), campaign.posterior.cov.clone(), len(campaign.log)


def _assert_unchanged(campaign: Campaign, snapshot: tuple[torch.Tensor, torch.Tensor, int]):
    mean, cov, n_log = snapshot
    assert torch.equal(campaign.posterior.mean, mean)
    assert torch.equal(campaign.posterior.cov, cov)
    assert len(campaign.log) == n_log


def _standardised(campaign: Campaign) -> torch.Tensor:
    """Standardised scores before any label, read from the prior: Cov(f_i, w_k) = s_ik sd_w^2."""
    posterior = campaign.posterior
    cross = posterior.cov[: posterior.n_items, posterior.weight_index()]
    return cross / campaign.config.prior.weight_scale**2


# replay --------------------------------------------------------------------------------------


def _mixed_log_campaign() -> Campaign:
    """Wins, losses, ties and emoji ratings from raters of different noise, single and batched."""
    campaign = _campaign(9, tie_margin=0.5, emoji_thresholds=EMOJI)
    campaign.set_rater_noise("sharp", 0.5)
    campaign.set_rater_noise("vague", 2.0)
    rng = np.random.default_rng(SEED + 1)
    raters = ["sharp", "vague", "default"]
    for step in range(30):
        rater = raters[step % 3]
        if step % 4 == 3:
            campaign.observe_rating(int(rng.integers(9)), int(rng.integers(4)), rater=rater)
        else:
            i, j = rng.choice(9, size=2, replace=False)
            outcome = ("win", "loss", "tie")[int(rng.integers(3))]
            campaign.observe_pair(int(i), int(j), outcome, rater=rater)
    campaign.observe(
        [
            Judgment.pair("vague", 1, 2, Outcome.TIE),
            Judgment.rating("sharp", 4, 0),
            Judgment.pair("sharp", 3, 7, Outcome.LOSS),
            Judgment.pair("default", 8, 0, Outcome.WIN),
            Judgment.rating("vague", 5, 3),
        ]
    )
    return campaign


def test_replay_is_exact() -> None:
    """Replaying the log into a fresh campaign gives the same posterior bit for bit."""
    campaign = _mixed_log_campaign()
    assert {j.answer for j in campaign.log if j.question.kind == "pair"} == set(Outcome)
    assert {j.answer for j in campaign.log if j.question.kind == "level"} >= {0, 3}
    assert {j.rater for j in campaign.log} == {"sharp", "vague", "default"}
    fresh = campaign.replay()
    assert torch.equal(fresh.posterior.mean, campaign.posterior.mean)
    assert torch.equal(fresh.posterior.cov, campaign.posterior.cov)
    assert fresh.log == campaign.log
    assert fresh.context_names == campaign.context_names
    assert torch.equal(fresh.groups, campaign.groups)
    # The labels did move the posterior (the check above is not between two priors).
    assert float(campaign.posterior.item_mean.abs().max()) > 0.1


def test_replay_is_exact_after_clips_added_mid_campaign_without_criteria() -> None:
    """K = 0: clips added after labels replay exactly (no standardisation involved)."""
    campaign = Campaign(CampaignConfig(criteria=(), tie_margin=0.5), device="cpu")
    campaign.add_clips(count=5)
    campaign.observe_pair(0, 1, "win", rater="r")
    campaign.observe_pair(2, 1, "tie", rater="s")
    campaign.add_clips(count=3)
    campaign.observe_pair(6, 1, "loss", rater="r")
    fresh = campaign.replay()
    assert torch.equal(fresh.posterior.mean, campaign.posterior.mean)
    assert torch.equal(fresh.posterior.cov, campaign.posterior.cov)


def test_replay_is_exact_after_clips_added_mid_campaign() -> None:
    """With criteria, clips added after labels should replay exactly too."""
    campaign = _campaign(6, tie_margin=0.5)
    campaign.observe_pair(0, 1, "win", rater="r")
    campaign.add_clips([[1.0, 9.0, 4.0], [7.0, 2.0, 5.0]], contexts=["x", "z"])
    campaign.observe_pair(6, 1, "tie", rater="r")
    fresh = campaign.replay()
    torch.testing.assert_close(fresh.posterior.mean, campaign.posterior.mean)
    torch.testing.assert_close(fresh.posterior.cov, campaign.posterior.cov)


def test_replay_is_exact_when_rater_noise_changes_mid_campaign() -> None:
    """A noise change applies to later labels only; replay should reproduce that."""
    campaign = _campaign(5, tie_margin=0.5)
    campaign.observe_pair(0, 1, "win", rater="r")
    campaign.set_rater_noise("r", 3.0)
    campaign.observe_pair(2, 1, "win", rater="r")
    fresh = campaign.replay()
    torch.testing.assert_close(fresh.posterior.mean, campaign.posterior.mean)


# clips added mid-campaign -----------------------------------------------------------------


@pytest.mark.parametrize("context", ["x", "z"])
def test_clip_added_after_labels(context: str) -> None:
    """Old block unchanged; new clip f = s . (w + w_c) + u with s frozen and u ~ N(0, tau^2)."""
    rng = np.random.default_rng(SEED)
    raw = rng.normal(loc=5.0, scale=2.0, size=(8, len(CRITERIA)))
    campaign = Campaign(_config(tie_margin=0.5), device="cpu")
    campaign.add_clips(raw.tolist(), contexts=["x" if k % 3 else "y" for k in range(8)])
    for step in range(12):
        i, j = rng.choice(8, size=2, replace=False)
        campaign.observe_pair(int(i), int(j), ("win", "loss", "tie")[step % 3], rater="r")
    old = campaign.posterior
    n, size = old.n_items, old.mean.numel()

    new_raw = np.array([[3.0, 8.0, 5.5]])
    added = campaign.add_clips(new_raw.tolist(), contexts=[context])
    assert list(added) == [n]
    new = campaign.posterior
    new_context = context not in ("x", "y")
    assert new.n_items == n + 1
    assert new.n_contexts == old.n_contexts + int(new_context)

    # The old theta (items, then weights and contexts shifted by one) is untouched.
    old_index = torch.cat((torch.arange(n), torch.arange(n + 1, size + 1)))
    assert torch.equal(new.mean[old_index], old.mean)
    assert torch.equal(new.cov[old_index][:, old_index], old.cov)

    # Standardised with the statistics of the clips present at the first label.
    scores = torch.from_numpy((new_raw[0] - raw.mean(0)) / raw.std(0, ddof=1))
    c = campaign.context_names.index(context)
    w_index = new.weight_index()
    c_index = new.context_weight_index(torch.tensor(c))
    offset_mean = new.mean[c_index]
    if new_context:
        assert torch.equal(offset_mean, torch.zeros(len(CRITERIA)))
    expected_mean = scores @ (new.mean[w_index] + offset_mean)
    assert float(new.item_mean[n]) == pytest.approx(float(expected_mean), abs=1e-12)

    # Residual u = f_new - s . (w + w_c): variance tau^2, uncorrelated with the old theta.
    g = torch.zeros(new.mean.numel())
    g[n] = 1.0
    g[w_index] -= scores
    g[c_index] -= scores
    tau2 = PRIOR.residual_scale**2
    residual_cov = new.cov @ g
    assert float(g @ residual_cov) == pytest.approx(tau2, abs=1e-12)
    torch.testing.assert_close(residual_cov[old_index], torch.zeros(size), rtol=0, atol=1e-12)
    assert float(new.item_cov[n, n]) >= tau2

    # The campaign keeps working with the new clip.
    campaign.observe_pair(n, 0, "win", rater="s")
    assert campaign.leaderboard().rank.shape == (n + 1,)


# standardisation ---------------------------------------------------------------------------


def test_scores_standardised_over_all_clips_before_labels() -> None:
    """Before a label: per-criterion mean 0, sd 1 over every clip added so far."""
    rng = np.random.default_rng(SEED)
    campaign = Campaign(_config(), device="cpu")
    campaign.add_clips(rng.normal(3.0, 5.0, size=(4, 3)).tolist())
    campaign.add_clips(rng.normal(-2.0, 0.5, size=(5, 3)).tolist())
    scores = _standardised(campaign)
    torch.testing.assert_close(scores.mean(0), torch.zeros(3), rtol=0, atol=1e-12)
    torch.testing.assert_close(scores.std(0), torch.ones(3), rtol=0, atol=1e-12)


def test_missing_score_is_standardised_over_present_scores_and_widens_the_prior() -> None:
    """None is skipped by the statistics and costs prior variance `(sd_w^2 + sd_c^2)(1 - s^2)`."""
    campaign = Campaign(_config(), device="cpu")
    campaign.add_clips(
        [
            [1.0, 2.0, 3.0],
            [3.0, 4.0, 1.0],
            [2.0, 0.0, 2.0],  # full scores
            [None, 0.0, 2.0],  # the same clip with its first score missing
            [2.5, 6.0, math.nan],
        ]
    )
    scores = _standardised(campaign)
    assert torch.equal(scores[3, 0], torch.tensor(0.0))  # imputed at the mean
    first = scores[[0, 1, 2, 4], 0]
    assert float(first.mean()) == pytest.approx(0.0, abs=1e-12)
    assert float(first.std()) == pytest.approx(1.0, abs=1e-12)

    variance = torch.diagonal(campaign.posterior.item_cov)
    s = float(scores[2, 0])
    assert abs(s) < 1
    extra = (PRIOR.weight_scale**2 + PRIOR.context_scale**2) * (1 - s**2)
    assert float(variance[3] - variance[2]) == pytest.approx(extra, abs=1e-12)
    assert float(variance[3]) > float(variance[2])


# bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scores", "kwargs", "error"),
    [
        ([[1.0, 2.0]], {}, ValueError),  # too few scores
        ([[1.0, 2.0, 3.0, 4.0]], {}, ValueError),  # too many
        ([[1.0, math.inf, 3.0]], {}, ValueError),
        ([[1.0, 2.0, -math.inf]], {}, ValueError),
        ([[1.0, 2.0, 3.0]], {"contexts": ["x", "y"]}, ValueError),
        ([[1.0, 2.0, 3.0]], {"groups": []}, ValueError),
        ([[1.0, 2.0, 3.0]], {"count": 2}, ValueError),
        (None, {"count": 2}, ValueError),  # scores are required when K > 0
    ],
)
def test_bad_clips_add_nothing(scores: object, kwargs: dict, error: type[Exception]) -> None:
    """Invalid clips raise and leave the clips, groups and posterior as they were."""
    campaign = _campaign(4)
    campaign.observe_pair(0, 1, "win")
    snapshot = _snapshot(campaign)
    groups, contexts = campaign.groups.clone(), campaign.context_names
    with pytest.raises(error):
        campaign.add_clips(scores, **kwargs)  # type: ignore[arg-type]
    _assert_unchanged(campaign, snapshot)
    assert campaign.n_items == 4
    assert torch.equal(campaign.groups, groups)
    assert campaign.context_names == contexts
    campaign.add_clips([[1.0, 2.0, 3.0]], contexts=["q"])  # still usable
    assert campaign.n_items == 5


@pytest.mark.parametrize(
    ("judgments", "task_ids", "error"),
    [
        ([Judgment.pair("r", 0, 1, Outcome.TIE)], (), ValueError),  # forced choice
        ([Judgment.pair("r", 0, 9, Outcome.WIN)], (), IndexError),
        ([Judgment("r", Pair(0, 1), None)], (), ValueError),  # no outcome
        ([Judgment.rating("r", 0, 4)], (), ValueError),
        ([Judgment.rating("r", 0, -1)], (), ValueError),
        ([Judgment.rating("r", 9, 1)], (), IndexError),
        ([Judgment.pair("r", 0, 1, Outcome.WIN)], (12345,), KeyError),
        # A bad label at the end of a batch: the good ones before it are not applied either.
        (
            [
                Judgment.pair("r", 0, 1, Outcome.WIN),
                Judgment.rating("r", 2, 2),
                Judgment.pair("r", 2, 3, Outcome.TIE),
            ],
            (),
            ValueError,
        ),
    ],
)
def test_bad_labels_change_nothing(
    judgments: list[Judgment], task_ids: tuple[int, ...], error: type[Exception]
) -> None:
    """Invalid labels or task ids raise before the posterior, log or judged pairs change."""
    campaign = _campaign(5, emoji_thresholds=EMOJI)
    campaign.observe_pair(3, 4, "loss", rater="s")
    task = campaign.next_pairs("r")[0]
    snapshot = _snapshot(campaign)
    with pytest.raises(error):
        campaign.observe(judgments, task_ids)
    _assert_unchanged(campaign, snapshot)
    assert [t.id for t in campaign.pending] == [task.id]
    # No pair was recorded as judged by 'r': all 10 pairs are still available to them.
    seen = {
        (min(t.first, t.second), max(t.first, t.second))
        for t in campaign.next_pairs("r", count=10, hold=False)
    }
    assert len(seen) == 10


def test_repeated_task_id_changes_nothing() -> None:
    """The same task id twice in one observe call must fail before anything is written."""
    campaign = _campaign(4)
    task = campaign.next_pairs("r")[0]
    snapshot = _snapshot(campaign)
    judgment = Judgment.pair("r", task.first, task.second, Outcome.WIN)
    with pytest.raises((KeyError, ValueError)):
        campaign.observe([judgment], (task.id, task.id))
    _assert_unchanged(campaign, snapshot)


def test_bad_single_labels_raise() -> None:
    """observe_pair / observe_rating validate the outcome, the clips and the emoji scale."""
    campaign = _campaign(4)
    snapshot = _snapshot(campaign)
    with pytest.raises(ValueError):
        campaign.observe_pair(0, 1, "draw")
    with pytest.raises(ValueError, match="ties"):
        campaign.observe_pair(0, 1, "tie")
    with pytest.raises(ValueError, match="emoji"):
        campaign.observe_rating(0, 1)  # no emoji scale in this campaign
    with pytest.raises(IndexError):
        campaign.observe_pair(0, 4, "win")
    with pytest.raises(KeyError):
        campaign.observe_pair(0, 1, "win", task_id=99)
    _assert_unchanged(campaign, snapshot)


def test_bad_config_and_rater_noise_raise() -> None:
    """The configuration and rater noise are validated."""
    with pytest.raises(ValueError):
        CampaignConfig(criteria=("a", "a"))
    with pytest.raises(ValueError):
        CampaignConfig(pair_scope="prompt")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        CampaignConfig(tie_margin=-0.1)
    with pytest.raises(ValueError):
        CampaignConfig(emoji_thresholds=(1.0, 0.0))
    with pytest.raises(ValueError):
        CampaignConfig(noise_sd=0.0)
    campaign = _campaign(3)
    for bad in (-1.0, math.inf, math.nan):
        with pytest.raises(ValueError):
            campaign.set_rater_noise("r", bad)
    assert campaign.noise_sd("r") == campaign.config.noise_sd


# K = 0 ------------------------------------------------------------------------------------------


def test_campaign_without_criteria() -> None:
    """criteria=() works from add_clips(count=n) through labels, selection and read-outs."""
    campaign = Campaign(CampaignConfig(criteria=(), tie_margin=0.3), device="cpu")
    assert list(campaign.add_clips(count=4)) == [0, 1, 2, 3]
    assert list(campaign.add_clips(count=2)) == [4, 5]
    posterior = campaign.posterior
    assert posterior.mean.shape == (6,)
    assert torch.equal(posterior.mean, torch.zeros(6))
    assert torch.equal(posterior.cov, torch.eye(6) * PriorScales().residual_scale ** 2)
    with pytest.raises(ValueError):
        campaign.add_clips()
    for task in campaign.next_pairs("r", count=3):
        campaign.observe_pair(task.first, task.second, "win", rater="r", task_id=task.id)
    campaign.observe_pair(5, 0, "tie")
    assert campaign.weights().mean.shape == (0,)
    board = campaign.leaderboard()
    assert sorted(board.rank.tolist()) == list(range(1, 7))
    assert float(campaign.posterior.item_mean.abs().max()) > 0


# read-outs ---------------------------------------------------------------------------------------


def _labelled(seed: int = SEED, **overrides: object) -> Campaign:
    campaign = _campaign(10, seed=seed, **overrides)
    rng = np.random.default_rng(seed + 1)
    outcomes = ("win", "loss", "tie") if campaign.config.tie_margin else ("win", "loss")
    for _ in range(25):
        i, j = rng.choice(10, size=2, replace=False)
        campaign.observe_pair(int(i), int(j), outcomes[int(rng.integers(len(outcomes)))])
    return campaign


@pytest.mark.parametrize("level", [0.5, 0.9, 0.99])
def test_leaderboard(level: float) -> None:
    """Ranks are 1..n by decreasing mean; the interval is mean +- z sd and contains the mean."""
    campaign = _labelled()
    board = campaign.leaderboard(level)
    n = campaign.n_items
    assert sorted(board.rank.tolist()) == list(range(1, n + 1))
    order = torch.argsort(board.rank)
    assert bool((board.mean[order][:-1] >= board.mean[order][1:]).all())
    assert int(torch.argmax(campaign.posterior.item_mean)) == int(torch.argmin(board.rank))
    assert bool(((board.lower < board.mean) & (board.mean < board.upper)).all())
    half = float(norm.ppf(0.5 + level / 2)) * board.sd
    torch.testing.assert_close(board.upper - board.mean, half)
    torch.testing.assert_close(board.sd**2, torch.diagonal(campaign.posterior.item_cov))
    assert board.level == level


@pytest.mark.parametrize("level", [0.0, 1.0, -0.5, 1.5])
def test_leaderboard_rejects_bad_levels(level: float) -> None:
    """The credible level must lie in (0, 1)."""
    with pytest.raises(ValueError):
        _labelled().leaderboard(level)


def test_probability_better_is_complementary() -> None:
    """P(i > j) + P(j > i) = 1, and P(i > j) = Phi(mu / s)."""
    campaign = _labelled()
    mean, cov = campaign.posterior.item_mean, campaign.posterior.item_cov
    for i, j in [(0, 1), (3, 7), (9, 2), (5, 6)]:
        forward, backward = campaign.probability_better(i, j), campaign.probability_better(j, i)
        assert forward + backward == pytest.approx(1.0, abs=1e-12)
        s = math.sqrt(float(cov[i, i] + cov[j, j] - 2 * cov[i, j]))
        assert forward == pytest.approx(float(norm.cdf(float(mean[i] - mean[j]) / s)), abs=1e-12)


@pytest.mark.parametrize("tie_margin", [0.0, 0.5])
def test_predict_sums_to_one(tie_margin: float) -> None:
    """Predictive outcome probabilities sum to 1, with one entry per outcome, for any rater."""
    campaign = _labelled(tie_margin=tie_margin)
    campaign.set_rater_noise("vague", 3.0)
    for i, j in [(0, 1), (4, 8)]:
        for rater in (None, "vague"):
            probabilities = campaign.predict(i, j, rater)
            assert len(probabilities) == (3 if tie_margin else 2)
            assert sum(probabilities) == pytest.approx(1.0, abs=1e-12)
            assert all(p > 0 for p in probabilities)
        # Swapping the clips mirrors the outcomes.
        assert campaign.predict(j, i) == pytest.approx(campaign.predict(i, j)[::-1], abs=1e-12)
    # A noisier rater is less predictable.
    sharp, vague = campaign.predict(0, 1), campaign.predict(0, 1, "vague")
    assert abs(vague[-1] - vague[0]) < abs(sharp[-1] - sharp[0])


@pytest.mark.parametrize(
    ("pair_seconds", "rating_seconds", "is_pair"),
    [(6.0, 1e-6, False), (1e-6, 4.0, True)],
)
def test_next_task_trades_gain_against_time(
    pair_seconds: float, rating_seconds: float, is_pair: bool
) -> None:
    """The task with the most bits per second wins: cheap ratings or cheap pairs."""
    campaign = _labelled(
        emoji_thresholds=EMOJI,
        tie_margin=0.5,
        pair_seconds=pair_seconds,
        rating_seconds=rating_seconds,
    )
    task = campaign.next_task("r")
    assert task.is_pair is is_pair
    assert (task.second >= 0) is is_pair
    assert task.gain > 0
    assert [t.id for t in campaign.pending] == [task.id]
    assert len(task.probabilities) == (3 if is_pair else 4)


def test_next_task_without_emoji_scale_is_a_pair() -> None:
    """With no emoji thresholds only pairs are possible, however cheap ratings are."""
    campaign = _labelled(rating_seconds=1e-6)
    assert campaign.next_task("r", hold=False).is_pair
    assert campaign.pending == ()


def test_forbidden_pairs_are_never_handed_out() -> None:
    campaign = _campaign(6)
    everything = [(i, j) for i in range(6) for j in range(i + 1, 6)]
    allowed = {(1, 4), (2, 5)}
    forbidden = [(j, i) for i, j in everything if (i, j) not in allowed]  # either order works
    tasks = campaign.next_pairs(count=4, forbidden_pairs=forbidden, hold=False)
    assert {(t.first, t.second) for t in tasks} <= allowed
    with pytest.raises(IndexError, match="outside"):
        campaign.next_pairs(forbidden_pairs=[(0, 6)])
    assert not campaign.pending


def test_refine_removes_the_order_dependence_and_replays_exactly() -> None:
    """EP over the mixed log (pairs, ties, ratings, several noises, criteria): the same
    posterior whatever the label order, unlike ADF; replay repeats the refine bit for bit."""
    campaign = _mixed_log_campaign()
    log = campaign.log
    shuffled = _campaign(9, tie_margin=0.5, emoji_thresholds=EMOJI)
    order = np.random.default_rng(SEED + 2).permutation(len(log))
    shuffled.observe([log[k] for k in order])
    adf_gap = float((shuffled.posterior.mean - campaign.posterior.mean).abs().max())
    assert adf_gap > 1e-3
    result = campaign.refine()
    shuffled.refine()
    assert result.sweeps >= 2 and result.change <= 1e-8
    torch.testing.assert_close(shuffled.posterior.mean, campaign.posterior.mean, atol=1e-6, rtol=0)
    torch.testing.assert_close(shuffled.posterior.cov, campaign.posterior.cov, atol=1e-6, rtol=0)
    campaign.observe_pair(0, 1, "win", rater="sharp")  # ADF on top of the refined state
    fresh = campaign.replay()
    assert torch.equal(fresh.posterior.mean, campaign.posterior.mean)
    assert torch.equal(fresh.posterior.cov, campaign.posterior.cov)


def test_refine_without_labels_is_the_prior() -> None:
    campaign = _campaign(5)
    campaign.refine()
    torch.testing.assert_close(campaign.posterior.mean, campaign.prior().mean)
    torch.testing.assert_close(campaign.posterior.cov, campaign.prior().cov)


def test_lapse_model_replays_exactly_and_learns_who_clicks_at_random() -> None:
    campaign = _campaign(8, tie_margin=0.5, lapse_prior=(9.0, 1.0))
    assert campaign.keep_probability("new") == pytest.approx(0.95 * 0.9)  # 5 % pure clickers
    rng = np.random.default_rng(SEED)
    truth = np.linspace(-3, 3, 8)
    for _ in range(60):
        i, j = (int(v) for v in rng.choice(8, size=2, replace=False))
        careful = "win" if truth[i] > truth[j] else "loss"
        random_click = ("win", "tie", "loss")[int(rng.integers(3))]
        campaign.observe_pair(i, j, careful, rater="careful")
        campaign.observe_pair(i, j, random_click, rater="clicker")
    reliability = campaign.rater_reliability()
    assert reliability["careful"].keep > 0.8 and not reliability["careful"].flagged
    assert reliability["clicker"].keep < 0.5 and reliability["clicker"].flagged
    assert reliability["clicker"].labels == 60
    assert all(j.keep is not None for j in campaign.log)
    fresh = campaign.replay()
    assert torch.equal(fresh.posterior.mean, campaign.posterior.mean)
    assert torch.equal(fresh.posterior.cov, campaign.posterior.cov)
    assert fresh.rater_reliability() == reliability
    with pytest.raises(ValueError, match="keep"):
        campaign.observe([Judgment.pair("x", 0, 1, Outcome.WIN, keep=0.0)])
    with pytest.raises(ValueError, match="lapse_prior"):
        _config(lapse_prior=(0.0, 1.0))


@pytest.mark.parametrize("scope", ["any", "group"])
def test_expected_kendall_tau_matches_monte_carlo(scope: str) -> None:
    """E[tau] by |2p - 1| per pair against Kendall tau of posterior draws vs the mean order."""
    campaign = Campaign(CampaignConfig(criteria=(), pair_scope=scope), device="cpu")
    campaign.add_clips(count=9, groups=[0, 0, 0, 1, 1, 1, 1, 2, 2])
    rng = np.random.default_rng(3)
    for label in range(25):
        rater = f"r{label // 5}"  # a rater sees each pair once
        task = campaign.next_pairs(rater, hold=False)[0]
        win = rng.random() < 0.5 + 0.04 * (task.second - task.first)
        outcome = Outcome.WIN if win else Outcome.LOSS
        campaign.observe([Judgment.pair(rater, task.first, task.second, outcome)])
    expected = campaign.expected_kendall_tau()
    post = campaign.posterior
    draws = torch.distributions.MultivariateNormal(
        post.item_mean, covariance_matrix=post.item_cov
    ).sample((40_000,))
    i, j = torch.triu_indices(9, 9, 1)
    if scope == "group":
        same = campaign.groups[i] == campaign.groups[j]
        i, j = i[same], j[same]
    mean_sign = torch.sign(post.item_mean[i] - post.item_mean[j])
    agree = (torch.sign(draws[:, i] - draws[:, j]) * mean_sign).mean(1)
    assert 0 < expected < 1
    assert expected == pytest.approx(float(agree.mean()), abs=0.01)


def _learned_noise_ratios(seed: int) -> list[float]:
    """Learned / true noise sd of four raters (two at 0.5 JOD, two at 1.5) who answered 300
    random pairs each of 30 clips whose quality has exactly the prior's sd (1.5 JOD: the
    latent scale, and with it every rater's sd, is then the prior's), noise and lapses
    learned as the service does."""
    rng = np.random.default_rng(seed)
    draws = rng.standard_normal(30)
    quality = 1.5 * (draws - draws.mean()) / draws.std()
    config = CampaignConfig(
        criteria=(), prior=quality_prior(0), lapse_prior=(9.0, 1.0), learn_rater_noise=True
    )
    campaign = Campaign(config, device="cpu")
    campaign.add_clips(count=30)
    true_sd = {"sharp0": 0.5, "sharp1": 0.5, "blunt0": 1.5, "blunt1": 1.5}
    for _ in range(300):
        batch = []
        for rater, sd in true_sd.items():
            i, j = (int(v) for v in rng.choice(30, 2, replace=False))
            seen = quality[i] - quality[j] + sd * rng.standard_normal()
            batch.append(Judgment.pair(rater, i, j, Outcome.WIN if seen > 0 else Outcome.LOSS))
        campaign.observe(batch)
    learned = campaign.rater_reliability()
    return [learned[rater].noise_sd / sd for rater, sd in true_sd.items()]


def test_learned_rater_noise_lands_on_the_truth() -> None:
    """Each label is scored under its cavity (docs/MATH.md §2, eq. (2.2)), so honest raters'
    learned noise is not biased low. Two worlds, four raters each: the geometric mean of
    learned / true sd was 0.93-1.20 over ten such pairs of worlds (seeds 0-19), 0.68-0.83
    when labels were scored under the posterior that holds them; each rater 0.67-1.58 (the
    sharp raters' prior, centred on 1 JOD, pulls them up a little)."""
    ratios = np.array(_learned_noise_ratios(SEED) + _learned_noise_ratios(SEED + 1))
    assert 0.88 <= float(np.exp(np.log(ratios).mean())) <= 1.3
    assert ((ratios > 0.6) & (ratios < 1.7)).all()


def test_rater_reliability_is_rederived_when_labels_double_and_added_to_in_between() -> None:
    """Below RATER_REFIT_BELOW labels, and whenever a rater's count doubles, their grid is
    re-derived from all their labels under their cavities in the current posterior; in between
    the new labels' terms are added (older ones keep the marginals they were scored with)."""
    config = CampaignConfig(criteria=(), lapse_prior=(9.0, 1.0), learn_rater_noise=True)
    campaign = Campaign(config, device="cpu")
    campaign.add_clips(count=12)
    rng = np.random.default_rng(SEED)

    def full() -> object:
        own = campaign._raters.judgments["r"]
        return rater_posterior(
            campaign._rater_grid(own, campaign._form),
            default_noise_sd=config.noise_sd,
            spread=config.noise_prior_spread,
        )

    base = 0  # the label count the grid was last re-derived at
    for count in range(1, 81):
        i, j = (int(v) for v in rng.choice(12, 2, replace=False))
        campaign.observe([Judgment.pair("r", i, j, Outcome.WIN if i < j else Outcome.LOSS)])
        learned = campaign.rater_reliability()["r"]
        assert learned.labels == count
        if count < RATER_REFIT_BELOW or count >= 2 * base:
            base = count
            assert learned == full()
        elif count in (40, 80):  # between doublings: added to, not re-derived
            assert learned != full()
            assert learned.keep == pytest.approx(full().keep, abs=0.02)
            # an added label was scored under its cavity then, the posterior before it, a
            # little wider than its cavity now: 6 % apart here
            assert learned.noise_sd == pytest.approx(full().noise_sd, rel=0.1)


def test_a_batch_of_many_raters_matches_each_rater_scored_alone() -> None:
    """One batch mixing a new rater, one updated incrementally, one whose count doubles and one
    below RATER_REFIT_BELOW labels (all scored in one grid call) gives each rater's reliability
    as scoring them one by one with `rater_grid` and `rater_posterior` does, after every
    batch."""
    config = CampaignConfig(
        criteria=(), tie_margin=0.3, lapse_prior=(9.0, 1.0), learn_rater_noise=True
    )
    campaign = Campaign(config, device="cpu")
    campaign.add_clips(count=12)
    rng = np.random.default_rng(SEED)
    outcomes = (Outcome.WIN, Outcome.LOSS, Outcome.TIE)
    assert RATER_REFIT_BELOW == 8  # the plan below is laid out for it
    plan = (
        [["doubles", "adds"]] * 7  # both re-derived at every batch below 8 labels
        + [["doubles", "young"]] * 6  # doubles 13: added to the grid of 7
        + [["doubles"]] * 14  # doubles 27: re-derived at 14, added to since
        + [["adds"]] * 2  # adds 9: added to the grid of 7
        + [["new", "adds", "doubles", "young", "new", "adds"]]  # doubles: 28 = 2 x 14
    )
    own: dict[str, list[Judgment]] = {}
    alone: dict[str, tuple[RaterGrid, int]] = {}  # the rule of Campaign._refit_raters
    position: dict[int, int] = {}  # each label's place among the events applied

    def grid_alone(judgments: list[Judgment]) -> RaterGrid:
        first = torch.tensor([j.first for j in judgments])
        second = torch.tensor([j.second for j in judgments])
        mu, var = pair_marginal(campaign.posterior, first, second)
        # each label under its cavity: its own site divided out (docs/MATH.md eq. (2.2))
        sites = campaign._form.sites.take([position[id(j)] for j in judgments], mu)
        mu, var = cavity_moments(mu, var, sites)
        bounds = torch.tensor([pair_interval(j.answer, config.tie_margin) for j in judgments])
        return rater_grid(
            mu,
            var,
            bounds[:, 0].to(mu),
            bounds[:, 1].to(mu),
            torch.full_like(mu, 3.0),
            default_noise_sd=config.noise_sd,
            keep_prior=config.lapse_prior,
            random_share=config.random_rater_share,
            learn_noise=True,
        )

    for raters in plan:
        batch = []
        for rater in raters:
            i, j = (int(v) for v in rng.choice(12, 2, replace=False))
            batch.append(Judgment.pair(rater, i, j, outcomes[int(rng.integers(3))]))
        for judgment in batch:
            position[id(judgment)] = len(position)
        campaign.observe(batch)
        fresh: dict[str, list[Judgment]] = {}
        for judgment in batch:
            own.setdefault(judgment.rater, []).append(judgment)
            fresh.setdefault(judgment.rater, []).append(judgment)
        for rater, new in fresh.items():
            count, cached = len(own[rater]), alone.get(rater)
            if cached is None or count < RATER_REFIT_BELOW or count >= 2 * cached[1]:
                alone[rater] = (grid_alone(own[rater]), count)
            else:
                extra = grid_alone(new).log_likelihood
                grid = replace(cached[0], log_likelihood=cached[0].log_likelihood + extra)
                alone[rater] = (replace(grid, labels=count), cached[1])
        learned = campaign.rater_reliability()
        assert list(learned) == list(alone)
        for rater, (grid, _) in alone.items():
            expected = rater_posterior(
                grid, default_noise_sd=config.noise_sd, spread=config.noise_prior_spread
            )
            got = learned[rater]
            assert (got.labels, got.flagged) == (expected.labels, expected.flagged)
            for name in ("keep", "keep_low", "keep_high", "probability_random", "noise_sd"):
                assert getattr(got, name) == pytest.approx(getattr(expected, name), abs=1e-10)
    # the last batch took every path: new, added to, re-derived on doubling, re-derived young
    bases = {rater: campaign._raters.grids[rater][1] for rater in alone}
    assert bases == {"doubles": 28, "adds": 7, "young": 7, "new": 2}


def test_weight_summary_gives_sds_and_intervals() -> None:
    """The weights' sd and central-interval half-widths, globally and per context."""
    campaign = Campaign(CampaignConfig(criteria=("a", "b")), device="cpu")
    campaign.add_clips([[0.1, 0.2], [0.3, -0.1], [1.0, 0.5]], contexts=["x", "y", "x"])
    campaign.observe_pair(0, 1, "win")
    summary = campaign.weights()
    torch.testing.assert_close(summary.sd, summary.cov.diagonal().sqrt())
    for c in range(2):
        torch.testing.assert_close(summary.context_sd[c], summary.context_cov[c].diagonal().sqrt())
    half, context_half = summary.halfwidths(0.9)
    torch.testing.assert_close(half, 1.6448536269514722 * summary.sd)
    torch.testing.assert_close(context_half, 1.6448536269514722 * summary.context_sd)
    with pytest.raises(ValueError, match="credible level"):
        summary.halfwidths(1.0)


def test_raters_doubling_together_are_re_derived_over_several_batches() -> None:
    """Raters past 64 labels whose counts double in the same batch are re-derived as far as
    the batch's budget of re-scored labels goes; the rest are added to and re-derived with a
    later batch."""
    config = CampaignConfig(criteria=(), lapse_prior=(9.0, 1.0), learn_rater_noise=True)
    campaign = Campaign(config, device="cpu")
    campaign.add_clips(count=12)
    rng = np.random.default_rng(SEED)
    raters = [f"r{k}" for k in range(8)]

    def batch(who: list[str]) -> None:
        judgments = []
        for rater in who:
            i, j = (int(v) for v in rng.choice(12, 2, replace=False))
            judgments.append(Judgment.pair(rater, i, j, Outcome.WIN if i < j else Outcome.LOSS))
        campaign.observe(judgments)

    for _ in range(111):  # re-derived each batch below 8 labels, then at 14, 28 and 56
        batch(raters)
    assert {campaign._raters.grids[r][1] for r in raters} == {56}
    batch(raters)  # all 8 reach 112 = 2 x 56 at once: 8 x 112 labels against the budget
    bases = [campaign._raters.grids[r][1] for r in raters]
    per_batch = -(-RATER_REDERIVE_BUDGET // 112)  # while some budget is left
    assert 0 < per_batch < 8
    assert bases == [112] * per_batch + [56] * (8 - per_batch)
    batch(raters)  # the next ones, at 113 labels, with the next batch
    bases = [campaign._raters.grids[r][1] for r in raters]
    done = min(8, 2 * per_batch)
    assert bases == [112] * per_batch + [113] * (done - per_batch) + [56] * (8 - done)
    assert all(campaign.rater_reliability()[r].labels == 113 for r in raters)  # none lost
