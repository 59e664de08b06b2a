"""Per-criterion questions (engine.criteria, docs/MATH.md §9): the enlarged prior against its
model written out by hand, one step against importance sampling, the bilinear model's moments,
the gains against Monte Carlo, EP, replay and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from engine import Campaign, CampaignConfig, Judgment, Outcome
from engine.criteria import (
    CRITERIA,
    CriterionQuestions,
    add_criterion_values,
    criterion_gains,
    criterion_moments,
    criterion_values,
)
from engine.questions import QUESTION_KINDS, Criterion, Pair, answer_specs
from engine.selection import NoEligibleTaskError
from engine.state import PriorScales, add_contexts, add_items, empty_posterior
from engine.task_choice import TaskClock, choose_task
from engine.update import interval_events, update

SCALES = PriorScales(weight_scale=0.5, context_scale=0.25, residual_scale=1.0)
ASKED = (0, 2)  # the asked criteria's columns among K = 3
LOADING = (0.6, -0.3)
RESIDUAL_SD = 0.7
NOISE_SD = 0.8


def _scores() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(4, 3, generator=generator, dtype=torch.float64)


def _engine_prior() -> tuple[torch.Tensor, torch.Tensor]:
    """The engine's prior of (f (4), g (4 x 2, clip-major)), and the posterior it came from."""
    questions = CriterionQuestions(("a", "c"), RESIDUAL_SD, LOADING)
    own = questions.own_scales(("a", "b", "c"), SCALES)
    posterior = add_contexts(empty_posterior(3, own), 1, own)
    scores = _scores()
    posterior = add_items(posterior, scores, torch.zeros(4, dtype=torch.long), own)
    return add_criterion_values(posterior, scores, ASKED, LOADING, RESIDUAL_SD), scores


def _model_map(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MATH.md §9 written out: base x = (w (3), u_c (3), r (4), v (4 x 2)) independent, and the
    map x -> (f, g): f = s'(w + u_c) + gamma'v + r, g = s_asked + v. Returns (M, offset, var)
    with (f, g) = M x + offset and Var x = diag(var)."""
    own_var = 1.0 - sum(g * g for g in LOADING) * RESIDUAL_SD**2
    n, n_asked = 4, len(ASKED)
    size = 3 + 3 + n + n * n_asked
    matrix = torch.zeros(n + n * n_asked, size)
    for i in range(n):
        matrix[i, 0:3] = scores[i]
        matrix[i, 3:6] = scores[i]
        matrix[i, 6 + i] = 1.0
        for k in range(n_asked):
            matrix[i, 10 + i * n_asked + k] = LOADING[k]
            matrix[n + i * n_asked + k, 10 + i * n_asked + k] = 1.0
    offset = torch.cat((torch.zeros(n), scores[:, list(ASKED)].reshape(-1)))
    var = torch.cat(
        (
            torch.full((3,), 0.25),
            torch.full((3,), 0.0625),
            torch.full((n,), own_var),
            torch.full((n * n_asked,), RESIDUAL_SD**2),
        )
    )
    return matrix, offset, var


def test_the_prior_is_the_model_written_out() -> None:
    posterior, scores = _engine_prior()
    matrix, offset, var = _model_map(scores)
    mean, cov = _f_and_g_of(posterior, len(ASKED))
    assert torch.allclose(mean, offset, atol=1e-12)
    assert torch.allclose(cov, matrix @ torch.diag(var) @ matrix.T, atol=1e-12)


def test_one_criterion_answer_is_the_tilted_moments_of_the_model() -> None:
    """One ADF step on g_0c - g_2c (c the second asked criterion) against importance sampling
    of the model's own draws, weighted by the answer's likelihood."""
    posterior, scores = _engine_prior()
    start = posterior.layout[CRITERIA].start - posterior.n_items
    n_asked = len(ASKED)
    border = [([start + 0 * n_asked + 1, start + 2 * n_asked + 1], [1.0, -1.0])]
    events = interval_events([0], [2], [(0.0, math.inf)], NOISE_SD, posterior.mean, border=border)
    after = update(posterior, events)
    mean, cov = _f_and_g_of(after, len(ASKED))

    matrix, offset, var = _model_map(scores)
    generator = torch.Generator().manual_seed(5)
    draws = torch.randn(400_000, var.numel(), generator=generator) * var.sqrt()
    values = draws @ matrix.T + offset  # (f, g)
    z = values[:, 4 + 0 * n_asked + 1] - values[:, 4 + 2 * n_asked + 1]
    weight = torch.special.ndtr(z / NOISE_SD)
    weight = weight / weight.sum()
    sampled_mean = weight @ values
    centred = values - sampled_mean
    sampled_cov = (centred * weight.unsqueeze(1)).T @ centred
    assert torch.allclose(mean, sampled_mean, atol=0.01)
    assert torch.allclose(cov, sampled_cov, atol=0.01)
    # the answer moved the criterion values, and through the loading the qualities
    assert float(mean[4 + 1] - offset[4 + 1]) > 0.1
    assert float(mean[0] - mean[2]) < -0.01  # gamma_c = -0.3: f_0 - f_2 moves against g


def test_with_gamma_the_prior_mean_the_prior_has_the_bilinear_models_moments() -> None:
    """f = w'(s + v) + r0 (w and v unknown: not Gaussian) has the same first two moments as
    the linear form with gamma = E[w] (Monte Carlo of the bilinear model)."""
    weight_mean = (0.8, 0.4)
    weight_sd = math.sqrt(0.5**2 + 0.25**2)  # global and the one context's offset
    questions = CriterionQuestions(("a", "b"), residual_sd=0.6)
    prior = PriorScales(0.5, 0.25, 1.2, weight_mean)
    campaign = Campaign(
        CampaignConfig(criteria=("a", "b"), prior=prior, criterion_questions=questions),
        device="cpu",
    )
    campaign.add_clips([[1.0, -1.0], [-1.0, 1.0], [0.5, 0.0], [-0.5, 0.0]])
    posterior = campaign.posterior
    n = 4
    g_mean, _ = criterion_values(posterior, 2)
    scores = g_mean  # the prior mean of g is the standardised score
    # the bilinear model, by its own draws
    generator = torch.Generator().manual_seed(2)
    count = 1_000_000
    w = torch.tensor(weight_mean) + weight_sd * torch.randn(count, 2, generator=generator)
    v = 0.6 * torch.randn(count, n, 2, generator=generator)
    own_var = 1.2**2 - (sum(m * m for m in weight_mean) + 2 * weight_sd**2) * 0.6**2
    r0 = math.sqrt(own_var) * torch.randn(count, n, generator=generator)
    g = scores + v
    f = (w.unsqueeze(1) * g).sum(-1) + r0
    joint = torch.cat((f, g.reshape(count, -1)), dim=1)
    sampled_mean, sampled_cov = joint.mean(0), torch.cov(joint.T)
    mean, cov = _f_and_g_of(posterior, 2)
    assert torch.allclose(mean, sampled_mean, atol=0.01)
    assert torch.allclose(cov, sampled_cov, atol=0.02)


def _f_and_g_of(posterior, n_asked: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = posterior.n_items
    start = posterior.layout[CRITERIA].start
    rows = torch.zeros(n + n * n_asked, posterior.mean.numel())
    for i in range(n):
        rows[i, i] = 1.0
        for k in range(n_asked):
            rows[n + i * n_asked + k, i] = 1.0
            rows[n + i * n_asked + k, start + i * n_asked + k] = 1.0
    return rows @ posterior.mean, rows @ posterior.cov @ rows.T


def _campaign(**questions: object) -> Campaign:
    config = CampaignConfig(
        tie_margin=0.3,
        pair_scope="group",
        criterion_questions=CriterionQuestions(("alignment", "safety"), **questions),  # type: ignore[arg-type]
    )
    campaign = Campaign(config, device="cpu")
    generator = torch.Generator().manual_seed(3)
    campaign.add_clips(torch.randn(8, 5, generator=generator), groups=[0] * 4 + [1] * 4)
    return campaign


def _labels() -> list[Judgment]:
    return [
        Judgment.criterion("a", 0, 1, "alignment", "win"),
        Judgment.pair("b", 1, 2, "loss"),
        Judgment.criterion("b", 4, 5, "safety", "tie"),
        Judgment.criterion("a", 2, 3, "safety", "loss"),
        Judgment.pair("a", 5, 6, "win"),
    ]


def _entropy(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-300, 1.0)
    return -(p * np.log2(p)).sum(-1)


def _outcome_probabilities(z: np.ndarray, noise_sd: float, tie: float) -> np.ndarray:
    loss = norm.cdf((-tie - z) / noise_sd)
    win = norm.sf((tie - z) / noise_sd)
    return np.stack((loss, 1 - loss - win, win), axis=-1)


@pytest.mark.parametrize("gain", ["quality", "all"])
def test_the_gain_is_the_mutual_information_by_monte_carlo(gain: str) -> None:
    """ "quality": I(y; f_i, f_j), drawing the two qualities and z given them; "all": I(y; z)."""
    campaign = _campaign(gain=gain)
    campaign.observe(_labels())
    posterior = campaign.posterior
    first, second, slot = torch.tensor([0, 4]), torch.tensor([2, 7]), torch.tensor([1, 0])
    gains = criterion_gains(
        posterior, first, second, slot, 2, NOISE_SD**2, campaign.pair_cuts, gain
    )
    mu, var, _ = criterion_moments(posterior, first, second, slot, 2)
    rng = np.random.default_rng(0)
    start = posterior.layout[CRITERIA].start
    for c in range(2):
        i, j, k = int(first[c]), int(second[c]), int(slot[c])
        index = torch.tensor([i, j, start + i * 2 + k, start + j * 2 + k])
        mean = posterior.mean[index].numpy()
        cov = posterior.cov[index][:, index].numpy()
        coef = np.array([1.0, -1.0, 1.0, -1.0])
        draws = rng.multivariate_normal(mean, cov, size=400_000)
        z = draws @ coef
        predictive = _outcome_probabilities(
            np.array([float(mu[c])]), math.sqrt(NOISE_SD**2 + float(var[c])), 0.3
        )[0]
        if gain == "all":
            conditional = _outcome_probabilities(z, NOISE_SD, 0.3)
        else:
            # z | f_i, f_j ~ N(E[z | f], Var(z | f)): the rest is noise to the qualities
            cross = cov[:2] @ coef
            solve = np.linalg.solve(cov[:2, :2], cross)
            z_given_f = mean @ coef + (draws[:, :2] - mean[:2]) @ solve
            rest = float(coef @ cov @ coef - cross @ solve)
            conditional = _outcome_probabilities(z_given_f, math.sqrt(NOISE_SD**2 + rest), 0.3)
        expected = _entropy(predictive) - _entropy(conditional).mean()
        assert float(gains[c]) == pytest.approx(expected, abs=0.004)
    if gain == "quality":
        everything = criterion_gains(
            posterior, first, second, slot, 2, NOISE_SD**2, campaign.pair_cuts, "all"
        )
        assert bool((gains <= everything + 1e-12).all())


def test_without_criterion_answers_the_clips_are_as_without_criterion_questions() -> None:
    with_questions = _campaign()
    without = Campaign(CampaignConfig(tie_margin=0.3, pair_scope="group"), device="cpu")
    generator = torch.Generator().manual_seed(3)
    without.add_clips(torch.randn(8, 5, generator=generator), groups=[0] * 4 + [1] * 4)
    pairs = [j for j in _labels() if j.question.kind == "pair"]
    for campaign in (with_questions, without):
        campaign.observe(pairs)
        campaign.add_clips(torch.randn(2, 5, generator=torch.Generator().manual_seed(4)))
    a, b = with_questions.posterior, without.posterior
    n = a.n_items
    assert torch.allclose(a.item_mean, b.item_mean, atol=1e-12)
    assert torch.allclose(a.item_cov, b.item_cov, atol=1e-12)
    assert torch.allclose(a.mean[n : b.mean.numel()], b.mean[n:], atol=1e-12)


def test_criterion_answers_replay_bit_for_bit_and_ep_is_order_free() -> None:
    campaign = _campaign()
    campaign.observe(_labels()[:3])
    campaign.add_clips(torch.randn(2, 5, generator=torch.Generator().manual_seed(4)))
    campaign.observe([*_labels()[3:], Judgment.criterion("c", 8, 9, "alignment", "loss")])
    replayed = campaign.replay()
    assert torch.equal(replayed.posterior.mean, campaign.posterior.mean)
    assert torch.equal(replayed.posterior.cov, campaign.posterior.cov)

    # the same clip batches around the first label (it freezes the score statistics), every
    # label in the opposite order
    shuffled = _campaign()
    shuffled.observe(_labels()[2::-1])
    shuffled.add_clips(torch.randn(2, 5, generator=torch.Generator().manual_seed(4)))
    shuffled.observe([Judgment.criterion("c", 8, 9, "alignment", "loss"), *_labels()[:2:-1]])
    campaign.refine(max_sweeps=200)
    shuffled.refine(max_sweeps=200)
    assert torch.allclose(campaign.posterior.mean, shuffled.posterior.mean, atol=1e-7)
    assert torch.allclose(campaign.posterior.cov, shuffled.posterior.cov, atol=1e-7)


def test_a_criterion_answer_moves_its_criterion_more_than_the_others() -> None:
    campaign = _campaign()
    before, _ = campaign.criterion_values()
    campaign.observe([Judgment.criterion("a", 0, 1, "alignment", "win")] * 3)
    after, sd = campaign.criterion_values()
    moved = (after - before)[0]
    assert float(moved[0]) > 0.2 and float((after - before)[1, 0]) < -0.2
    assert abs(float(moved[1])) < 0.5 * float(moved[0])
    assert bool((sd > 0).all())


def test_the_question_kind_and_its_answers() -> None:
    assert QUESTION_KINDS["criterion"] is Criterion
    question = Criterion(3, 5, "safety")
    assert question.key == Criterion(5, 3, "safety").key != Criterion(3, 5, "alignment").key
    (spec,) = answer_specs(question, Outcome.TIE, 0.3, None)
    assert (spec.first, spec.second, spec.lo, spec.hi) == (3, 5, -0.3, 0.3)
    with pytest.raises(ValueError):
        Criterion(2, 2, "safety")
    with pytest.raises(ValueError):
        answer_specs(question, "both_good", 0.3, None, 0.5)


def test_bad_criterion_input_is_refused_and_changes_nothing() -> None:
    campaign = _campaign()
    before = campaign.posterior
    with pytest.raises(ValueError, match="does not ask about criterion 'fineness'"):
        campaign.observe(
            [Judgment.pair("a", 0, 1, "win"), Judgment.criterion("a", 0, 1, "fineness", "win")]
        )
    assert torch.equal(campaign.posterior.cov, before.cov) and not campaign.log
    plain = Campaign(CampaignConfig(), device="cpu")
    plain.add_clips(torch.randn(3, 5))
    with pytest.raises(ValueError, match="does not ask about criterion"):
        plain.observe([Judgment.criterion("a", 0, 1, "alignment", "win")])
    with pytest.raises(NoEligibleTaskError):
        plain.next_criterion("a")
    with pytest.raises(ValueError, match="not among"):
        CampaignConfig(criterion_questions=CriterionQuestions(("style",)))
    with pytest.raises(ValueError, match='structure="dense"'):
        CampaignConfig(
            pair_scope="group",
            structure="blocks",
            criterion_questions=CriterionQuestions(("safety",)),
        )
    with pytest.raises(ValueError, match="too little"):
        Campaign(
            CampaignConfig(criterion_questions=CriterionQuestions(("safety",), residual_sd=5.0))
        )


def test_the_next_task_is_a_criterion_question_when_it_teaches_more_per_second() -> None:
    slow = _campaign(gain="all", seconds=600.0)
    assert all(t.question.kind == "pair" for t in slow.next_tasks("a", 2, hold=False))
    fast = _campaign(gain="all", seconds=0.01)
    (task,) = fast.next_tasks("a", 2)
    assert isinstance(task.question, Criterion)
    assert sum(task.probabilities) == pytest.approx(1.0)
    # never the same criterion question twice to one rater, held or answered
    again = fast.next_criterion("a", hold=False)
    assert again.question.key != task.question.key
    fast.observe([Judgment("a", task.question, Outcome.WIN)], [task.id])
    keys = {fast.next_criterion("a").question.key for _ in range(3)}
    assert task.question.key not in keys and len(keys) == 3


def test_choose_task_weighs_criterion_questions_by_gain_per_second() -> None:
    campaign = _campaign()
    posterior, groups = campaign.posterior, campaign.groups
    clock = TaskClock()
    plain = choose_task(posterior, groups, clock, noise_var=NOISE_SD**2, sizes=(2,))
    assert isinstance(plain.question, Pair)
    asked = ("alignment", "safety")
    slow = choose_task(posterior, groups, clock, noise_var=NOISE_SD**2, sizes=(2,), criteria=asked)
    assert slow == plain  # at 6 s each, the pair says more about the qualities
    for _ in range(500):  # raters answer criterion questions in a tenth of a second
        clock.observe(Criterion(0, 1, "safety"), 0.0, 0.1)
    fast = choose_task(
        posterior,
        groups,
        clock,
        noise_var=NOISE_SD**2,
        sizes=(2,),
        criteria=asked,
        criterion_gain="all",
    )
    assert isinstance(fast.question, Criterion)
    question = fast.question
    slot = torch.tensor([asked.index(question.criterion)])
    expected = criterion_gains(
        posterior,
        torch.tensor([question.first]),
        torch.tensor([question.second]),
        slot,
        2,
        NOISE_SD**2,
        torch.zeros(1),
        "all",
    )
    assert fast.gain == pytest.approx(float(expected[0]), rel=1e-12)
    assert sum(fast.probabilities) == pytest.approx(1.0)


def test_a_criterion_answer_takes_the_raters_noise_times_the_noise_scale() -> None:
    scaled = _campaign(noise_scale=0.5)
    plain = _campaign()
    scaled.observe([Judgment.criterion("a", 0, 1, "safety", "win", noise_sd=1.2)])
    plain.observe([Judgment.criterion("a", 0, 1, "safety", "win", noise_sd=0.6)])
    assert torch.allclose(scaled.posterior.cov, plain.posterior.cov, atol=1e-14)
    assert torch.allclose(scaled.posterior.mean, plain.posterior.mean, atol=1e-14)
    # a pair keeps the rater's own noise
    scaled.observe([Judgment.pair("a", 0, 1, "win", noise_sd=1.2)])
    plain.observe([Judgment.pair("a", 0, 1, "win", noise_sd=1.2)])
    assert torch.allclose(scaled.posterior.mean, plain.posterior.mean, atol=1e-14)


def test_empirical_bayes_refits_a_campaign_with_criterion_questions() -> None:
    campaign = _campaign()
    campaign.observe(_labels() * 3)
    fit = campaign.fit_prior(max_evaluations=30)
    assert fit.hyper.scales.residual_scale > 0
    replayed = campaign.replay()
    assert torch.equal(replayed.posterior.mean, campaign.posterior.mean)


@settings(max_examples=25)
@given(
    st.integers(0, 2**16),
    st.sampled_from(["win", "loss", "tie"]),
    st.floats(0.1, 2.0),
)
def test_gains_and_covariance_invariants(seed: int, outcome: str, noise_sd: float) -> None:
    """After random criterion answers the covariance is symmetric PSD; every gain is >= 0,
    the same with the clips swapped, and the gain about quality is at most the whole gain."""
    generator = torch.Generator().manual_seed(seed)
    campaign = _campaign()
    picks = torch.randint(0, 4, (3, 2), generator=generator)
    for a, b in picks.tolist():
        if a != b:
            campaign.observe([Judgment.criterion("a", a, b, "safety", outcome)])
    posterior = campaign.posterior
    cov = posterior.cov
    assert torch.allclose(cov, cov.T, atol=1e-12)
    assert float(torch.linalg.eigvalsh(cov).min()) > -1e-9
    first, second = torch.tensor([0, 1, 4, 5]), torch.tensor([2, 3, 6, 7])
    slot = torch.tensor([0, 1, 1, 0])
    cuts = campaign.pair_cuts
    quality = criterion_gains(posterior, first, second, slot, 2, noise_sd**2, cuts, "quality")
    swapped = criterion_gains(posterior, second, first, slot, 2, noise_sd**2, cuts, "quality")
    everything = criterion_gains(posterior, first, second, slot, 2, noise_sd**2, cuts, "all")
    assert bool((quality >= 0).all())
    assert torch.allclose(quality, swapped, atol=1e-10)
    assert bool((quality <= everything + 1e-10).all())


def test_float32_smoke() -> None:
    config = CampaignConfig(criterion_questions=CriterionQuestions(("safety",)))
    campaign = Campaign(config, device="cpu", dtype=torch.float32)
    campaign.add_clips(torch.randn(6, 5))
    campaign.observe([Judgment.criterion("a", 0, 1, "safety", "win")])
    task = campaign.next_criterion("a")
    assert campaign.posterior.mean.dtype == torch.float32
    assert math.isfinite(task.gain) and task.gain >= 0


def test_forbidden_pairs_are_never_asked_about() -> None:
    campaign = _campaign()
    forbidden = [(i, j) for i in range(8) for j in range(i + 1, 8) if (i, j) != (5, 6)]
    task = campaign.next_criterion("a", forbidden_pairs=forbidden, hold=False)
    assert sorted(task.question.items) == [5, 6]
    with pytest.raises(NoEligibleTaskError):
        campaign.next_criterion("a", forbidden_pairs=[*forbidden, (6, 5)])


def test_a_rater_who_may_click_at_random_gains_less() -> None:
    campaign = _campaign()
    posterior = campaign.posterior
    first, second, slot = torch.tensor([0, 4]), torch.tensor([2, 7]), torch.tensor([1, 0])
    cuts = campaign.pair_cuts
    sure = criterion_gains(posterior, first, second, slot, 2, NOISE_SD**2, cuts, "all")
    lapsing = criterion_gains(posterior, first, second, slot, 2, NOISE_SD**2, cuts, "all", 0.7)
    assert bool((lapsing < sure).all()) and bool((lapsing >= 0).all())
    # at keep 1 the lapse form is the plain gain
    same = criterion_gains(posterior, first, second, slot, 2, NOISE_SD**2, cuts, "all", 1.0)
    assert torch.allclose(same, sure, atol=1e-12)
