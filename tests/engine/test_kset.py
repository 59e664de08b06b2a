"""K-set questions (engine.questions.KSet): answers, their rank-broken events in a campaign,
and the decomposition's error against the exact Thurstonian model (docs/MATH.md §2, K-sets)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import Campaign, CampaignConfig, Judgment
from engine.questions import KSET_INTERVAL, QUESTION_KINDS, KSet, answer_events
from engine.state import Posterior
from engine.update import interval_events, update

NOISE_SD = 1.0


def test_kset_is_registered() -> None:
    assert QUESTION_KINDS["kset"] is KSet


@pytest.mark.parametrize(
    ("mode", "answer", "comparisons"),
    [
        ("best", (7,), ((7, 2), (7, 5), (7, 9))),
        ("best", 7, ((7, 2), (7, 5), (7, 9))),
        ("best_worst", (7, 9), ((7, 2), (7, 5), (7, 9), (2, 9), (5, 9))),
        ("rank", (9, 2, 7, 5), ((9, 2), (2, 7), (7, 5))),
    ],
)
def test_answers_break_into_comparisons(mode, answer, comparisons) -> None:
    question = KSet((5, 7, 9, 2), mode)
    assert question.comparisons(answer) == comparisons
    # the layout on the page does not change the events (nor, so, the posterior)
    assert KSet((9, 2, 7, 5), mode).comparisons(answer) == comparisons
    events = answer_events(question, answer, 0.5, None)
    # forced choice whatever the campaign's tie margin: a K-set has no tie option
    assert events == tuple((win, loss, *KSET_INTERVAL) for win, loss in comparisons)


@pytest.mark.parametrize(
    ("mode", "answer", "message"),
    [
        ("best", (4,), "not shown"),
        ("best", (), "names 1"),
        ("best", (5, 7), "names 1"),
        ("best_worst", (5, 5), "once"),
        ("best_worst", (5,), "names 2"),
        ("rank", (5, 7, 9), "names 4"),
        ("rank", (5, 7, 7, 9), "once"),
        ("rank", (5, 7, 9, 1), "not shown"),
        ("best", "5", "tuple of clip ids"),
        ("best", (True,), "tuple of clip ids"),
    ],
)
def test_bad_answers_are_refused(mode, answer, message) -> None:
    with pytest.raises(ValueError, match=message):
        KSet((5, 7, 9, 2), mode).comparisons(answer)


@pytest.mark.parametrize(
    ("items", "mode", "error"),
    [
        ((1, 2), "best", ValueError),
        ((1, 2, 3, 4, 5, 6, 7), "best", ValueError),
        ((1, 2, 2), "best", ValueError),
        ((1, 2, 3), "worst", ValueError),
        ((1, -2, 3), "best", IndexError),
    ],
)
def test_bad_ksets_are_refused(items, mode, error) -> None:
    with pytest.raises(error):
        KSet(items, mode)


@given(st.permutations(range(6)), st.sampled_from(("best", "best_worst", "rank")))
@settings(max_examples=60, deadline=None)
def test_the_key_ignores_the_order_shown(items, mode) -> None:
    assert KSet(tuple(items), mode).key == KSet(tuple(sorted(items)), mode).key
    assert (
        KSet(tuple(items), mode).key != KSet(tuple(items), "rank" if mode != "rank" else "best").key
    )
    assert KSet(tuple(items), mode).n_outcomes() == {"best": 6, "best_worst": 30, "rank": 720}[mode]


def _campaign(structure: str = "dense") -> Campaign:
    campaign = Campaign(
        CampaignConfig(criteria=("a", "b"), pair_scope="group", structure=structure),  # type: ignore[arg-type]
        device="cpu",
    )
    rng = np.random.default_rng(3)
    campaign.add_clips(rng.standard_normal((12, 2)).tolist(), groups=[g // 4 for g in range(12)])
    return campaign


def _kset_log() -> list[Judgment]:
    return [
        Judgment.kset("r1", (0, 1, 2, 3), (2,)),
        Judgment.kset("r2", (4, 5, 6), (6, 4), mode="best_worst"),
        Judgment.pair("r1", 8, 9, "win"),
        Judgment.kset("r2", (8, 9, 10, 11), (11, 8, 10, 9), mode="rank"),
    ]


def test_a_campaign_applies_a_kset_as_its_comparisons() -> None:
    """A K-set answer moves the posterior exactly as its broken-out comparisons do."""
    log = _kset_log()
    campaign = _campaign()
    campaign.observe(log)
    reference = _campaign()
    for judgment in log:
        pairs = (
            judgment.question.comparisons(judgment.answer)
            if isinstance(judgment.question, KSet)
            else ((judgment.first, judgment.second),)
        )
        reference.observe([Judgment.pair(judgment.rater, win, loss, "win") for win, loss in pairs])
    torch.testing.assert_close(
        campaign.posterior.mean, reference.posterior.mean, rtol=0, atol=1e-12
    )
    torch.testing.assert_close(campaign.posterior.cov, reference.posterior.cov, rtol=0, atol=1e-12)
    assert float(campaign.posterior.item_mean[2] - campaign.posterior.item_mean[0]) > 0.1
    fresh = campaign.replay()
    assert torch.equal(fresh.posterior.mean, campaign.posterior.mean)
    assert fresh.log == campaign.log


def test_blocks_form_and_ep_take_ksets() -> None:
    dense, blocks = _campaign(), _campaign("blocks")
    dense.observe(_kset_log())
    blocks.observe(_kset_log())
    torch.testing.assert_close(blocks.posterior.mean, dense.posterior.mean, rtol=0, atol=1e-9)
    torch.testing.assert_close(blocks.posterior.cov, dense.posterior.cov, rtol=0, atol=1e-9)
    dense.refine()
    blocks.refine()
    torch.testing.assert_close(blocks.posterior.mean, dense.posterior.mean, rtol=0, atol=1e-9)


def test_learned_rater_noise_and_lapses_take_ksets() -> None:
    campaign = Campaign(
        CampaignConfig(criteria=(), pair_scope="group", lapse_prior=(9, 1), learn_rater_noise=True),
        device="cpu",
    )
    campaign.add_clips(count=8, groups=[g // 4 for g in range(8)])
    campaign.observe([*_kset_log()[:2], Judgment.kset("r1", (4, 5, 6, 7), (5,))])
    assert campaign.rater_reliability()["r1"].labels == 3 + 3  # two K-sets of 4: 3 events each
    assert campaign.replay().posterior.mean.equal(campaign.posterior.mean)


@pytest.mark.parametrize(
    "judgment",
    [
        Judgment.kset(None, (0, 1, 4), (0,)),  # two prompts
        Judgment.kset(None, (0, 1, 2), (3,)),  # not shown
        Judgment.kset(None, (0, 1, 2), (0, 1, 2, 0), mode="rank"),
    ],
)
def test_a_campaign_refuses_bad_kset_answers_and_changes_nothing(judgment) -> None:
    campaign = _campaign()
    before = campaign.posterior.mean.clone()
    with pytest.raises(ValueError):
        campaign.observe([Judgment.pair(None, 0, 1, "win"), judgment])
    assert campaign.log == [] and torch.equal(campaign.posterior.mean, before)


# --- the decomposition against the exact Thurstonian model --------------------------------


def decomposed_posterior(
    mean: np.ndarray, cov: np.ndarray, question: KSet, answer: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """The engine's update of N(mean, cov) over the K clips by the answer's comparisons."""
    k = len(mean)
    prior = Posterior(torch.from_numpy(mean), torch.from_numpy(cov), k, 0, 0)
    events = answer_events(question, answer, 0.0, None)
    batch = interval_events(
        [e[0] for e in events],
        [e[1] for e in events],
        [e[2:] for e in events],
        NOISE_SD,
        prior.mean,
    )
    posterior = update(prior, batch)
    return posterior.mean.numpy(), posterior.cov.numpy()


def thurstonian_posterior(
    mean: np.ndarray, cov: np.ndarray, question: KSet, answer: tuple[int, ...], n_samples: int
) -> tuple[np.ndarray, np.ndarray]:
    """Monte Carlo of the exact model: f ~ N(mean, cov); the rater sees y_k = f_k + e_k,
    e_k ~ N(0, sigma^2 / 2) (so a pair's difference has the pair model's noise sigma^2) and
    answers by the order of y. The posterior moments of f given the answer, by rejection."""
    rng = np.random.default_rng(11)
    f = rng.multivariate_normal(mean, cov, size=n_samples)
    order = np.argsort(-(f + NOISE_SD / math.sqrt(2) * rng.standard_normal(f.shape)), axis=1)
    if question.mode == "best":
        seen = order[:, 0] == answer[0]
    elif question.mode == "best_worst":
        seen = (order[:, 0] == answer[0]) & (order[:, -1] == answer[1])
    else:
        seen = (order == np.asarray(answer)).all(axis=1)
    kept = f[seen]
    return kept.mean(axis=0), np.cov(kept.T)


# The tolerances docs/MATH.md §2 states for K <= 4, sigma = 1, prior variance 1 to 4:
# mean within 0.25 posterior sd, each variance within 15 %.
MEAN_TOLERANCE_SD = 0.25
VARIANCE_TOLERANCE = 0.15


@pytest.mark.parametrize("k", [3, 4])
@pytest.mark.parametrize("mode", ["best", "best_worst", "rank"])
@pytest.mark.parametrize("prior_var", [1.0, 4.0])
def test_the_decomposition_is_close_to_the_thurstonian_posterior(k, mode, prior_var) -> None:
    mean = np.linspace(0.0, 0.5, k)
    cov = prior_var * (0.7 * np.eye(k) + 0.3)
    answer = {"best": (1,), "best_worst": (1, 0), "rank": tuple(reversed(range(k)))}[mode]
    question = KSet(tuple(range(k)), mode)
    got_mean, got_cov = decomposed_posterior(mean, cov, question, answer)
    want_mean, want_cov = thurstonian_posterior(mean, cov, question, answer, 400_000)
    sd = np.sqrt(np.diag(want_cov))
    assert np.all(np.abs(got_mean - want_mean) <= MEAN_TOLERANCE_SD * sd)
    assert np.all(np.abs(np.diag(got_cov) / np.diag(want_cov) - 1) <= VARIANCE_TOLERANCE)
    # the answer moved the posterior well past the tolerance (the check is not between priors)
    assert np.abs(want_mean - mean).max() > 2 * MEAN_TOLERANCE_SD * sd.max()
