"""Expected information gain: MATH.md's reference values, quadrature, Monte Carlo, invariants."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.special import ndtr

from engine.objectives import (
    OBJECTIVES,
    binary_information_gain,
    expected_information_gain,
    interval_information_gain,
    outcome_probabilities,
    screening_score,
)
from tests.engine.reference import information_gain, quadrature_information_gain

SEED = 0
t = torch.tensor


def test_math_reference_values() -> None:
    """MATH.md §3: sigma = 1, mu = 0, s2 = 1, t = 0.5."""
    mu, var = t([0.0]), t([1.0])
    assert float(binary_information_gain(mu, var, 1.0)) == pytest.approx(0.2780, abs=5e-5)
    assert float(interval_information_gain(mu, var, 1.0, t([0.0]))) == pytest.approx(
        0.2787, abs=5e-5
    )
    assert float(interval_information_gain(mu, var, 1.0, t([-0.5, 0.5]))) == pytest.approx(
        0.3590, abs=5e-5
    )
    probabilities = outcome_probabilities(mu, var, 1.0, t([-0.5, 0.5]))[0]
    np.testing.assert_allclose(probabilities.numpy(), [0.362, 0.276, 0.362], atol=5e-4)


# (mu, s, sigma, cuts): narrow and wide posteriors (s up to 30 sigma), wide tie margins and
# spread ordinal cuts: the cases where plain Gauss-Hermite or one window fail (MATH.md §3).
QUADRATURE_CASES = [
    (0.3, 0.5, 1.0, [-1.0, 1.0]),
    (0.3, 3.0, 1.0, [-1.0, 1.0]),
    (0.3, 10.0, 1.0, [-1.0, 1.0]),
    (-2.0, 30.0, 1.0, [0.0]),
    (1.0, 3.0, 1.0, [-10.0, 10.0]),
    (0.0, 4.0, 0.5, [-3.0, -1.0, 1.0, 3.0]),
    (8.0, 2.0, 1.0, [-0.5, 0.5]),
    (0.0, 1.0, 1.0, [-0.5, 0.5]),
    (0.2, 0.99, 1.0, [-0.05, 0.05]),
]


@pytest.mark.parametrize(("mu", "sd", "noise_sd", "cuts"), QUADRATURE_CASES)
def test_quadrature_gain_matches_high_precision_integration(
    mu: float, sd: float, noise_sd: float, cuts: list[float]
) -> None:
    expected = information_gain(mu, sd**2, noise_sd, cuts)
    got = float(interval_information_gain(t([mu]), t([sd**2]), noise_sd**2, t(cuts)))
    assert got == pytest.approx(expected, abs=1e-8)


@pytest.mark.parametrize(("mu", "sd", "noise_sd", "cuts"), QUADRATURE_CASES[:6])
def test_gain_matches_monte_carlo_mutual_information(
    mu: float, sd: float, noise_sd: float, cuts: list[float]
) -> None:
    """I(y; z) = E[log p(y | z) - log p(y)] with (z, y) sampled jointly: an estimator that
    shares nothing with the quadrature."""
    rng = np.random.default_rng(SEED)
    n_samples = 400_000
    z = rng.normal(mu, sd, n_samples)
    perceived = z + rng.normal(0.0, noise_sd, n_samples)
    edges = np.array([-np.inf, *cuts, np.inf])
    y = np.searchsorted(edges, perceived) - 1
    conditional = ndtr((edges[y + 1] - z) / noise_sd) - ndtr((edges[y] - z) / noise_sd)
    c = math.sqrt(sd**2 + noise_sd**2)
    marginal = ndtr((edges[y + 1] - mu) / c) - ndtr((edges[y] - mu) / c)
    terms = np.log2(np.maximum(conditional, 1e-300)) - np.log2(marginal)
    estimate, error = terms.mean(), terms.std() / math.sqrt(n_samples)
    got = float(expected_information_gain(t([mu]), t([sd**2]), noise_sd**2, t(cuts)))
    # the binary closed form is itself within 0.0027 bits of the exact gain (MATH.md §3)
    slack = 0.0027 if cuts == [0.0] else 0.0
    assert abs(got - estimate) <= 5 * error + slack


@given(mu=st.floats(-20, 20), sd=st.floats(0.0, 20), noise_sd=st.floats(0.05, 5))
def test_closed_form_is_a_lower_bound_within_math_error(
    mu: float, sd: float, noise_sd: float
) -> None:
    closed = float(binary_information_gain(t([mu]), t([sd**2]), noise_sd**2))
    exact = float(interval_information_gain(t([mu]), t([sd**2]), noise_sd**2, t([0.0])))
    assert closed <= exact + 1e-9
    assert exact - closed <= 0.0028


cut_sets = st.sampled_from([[0.0], [-0.5, 0.5], [-2.0, 2.0], [-1.5, -0.5, 0.5, 1.5]])


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
@given(mu=st.floats(-40, 40), sd=st.floats(0.0, 40), noise_sd=st.floats(0.05, 8), cuts=cut_sets)
def test_objective_contract(
    name: str, mu: float, sd: float, noise_sd: float, cuts: list[float]
) -> None:
    """Every objective: finite, >= 0, <= the predictive entropy <= log2(#outcomes), symmetric
    under swapping the pair (z -> -z with the mirrored outcomes)."""
    objective = OBJECTIVES[name]
    cuts_t = t(cuts)
    gain = float(objective(t([mu]), t([sd**2]), noise_sd**2, cuts_t))
    probabilities = outcome_probabilities(t([mu]), t([sd**2]), noise_sd**2, cuts_t)[0]
    positive = probabilities[probabilities > 0]
    predictive_entropy = float(-(positive * torch.log2(positive)).sum())
    assert math.isfinite(gain)
    assert 0.0 <= gain <= predictive_entropy + 1e-9 <= math.log2(len(cuts) + 1) + 2e-9
    mirrored = float(objective(t([-mu]), t([sd**2]), noise_sd**2, -cuts_t.flip(0)))
    assert mirrored == pytest.approx(gain, abs=1e-12)


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_objective_batches_and_float32(name: str) -> None:
    objective = OBJECTIVES[name]
    mu, var = torch.linspace(-5, 5, 11), torch.linspace(0.01, 20, 11)
    batched = objective(mu, var, 1.0, t([-0.5, 0.5]))
    single = torch.cat(
        [objective(mu[k : k + 1], var[k : k + 1], 1.0, t([-0.5, 0.5])) for k in range(11)]
    )
    assert batched.shape == (11,)
    torch.testing.assert_close(batched, single, rtol=0, atol=1e-14)
    as32 = objective(mu.float(), var.float(), 1.0, t([-0.5, 0.5]).float())
    assert as32.dtype == torch.float32
    torch.testing.assert_close(as32.double(), batched, rtol=0, atol=1e-4)


def test_noise_free_rater_gain_is_predictive_entropy() -> None:
    mu, var, cuts = t([0.4]), t([2.0]), t([-0.5, 0.5])
    probabilities = outcome_probabilities(mu, var, 0.0, cuts)[0]
    entropy = float(-(probabilities * torch.log2(probabilities)).sum())
    assert float(expected_information_gain(mu, var, 0.0, cuts)) == pytest.approx(entropy, rel=1e-12)


def test_ties_carry_more_information_and_gain_grows_with_uncertainty() -> None:
    mu = t([0.0, 0.0, 0.0])
    var = t([0.25, 1.0, 4.0])
    binary = expected_information_gain(mu, var, 1.0, t([0.0]))
    ternary = expected_information_gain(mu, var, 1.0, t([-0.5, 0.5]))
    assert bool((ternary > binary).all())
    assert bool((binary[1:] > binary[:-1]).all()) and bool((ternary[1:] > ternary[:-1]).all())


@pytest.mark.parametrize("keep", [0.0, 0.3, 0.9])
@pytest.mark.parametrize(("mu", "sd", "noise_sd", "cuts"), QUADRATURE_CASES[:7])
def test_lapse_gain_matches_high_precision_integration(
    mu: float, sd: float, noise_sd: float, cuts: list[float], keep: float
) -> None:
    """The lapse-aware gain (a rater who clicks at random with probability 1 - keep) against
    30-digit quadrature of the mixture's mutual information; keep = 0 teaches nothing."""
    expected = information_gain(mu, sd**2, noise_sd, cuts, keep)
    for objective in (interval_information_gain, expected_information_gain):
        got = float(objective(t([mu]), t([sd**2]), noise_sd**2, t(cuts), keep=keep))
        assert got == pytest.approx(expected, abs=1e-8)
    if keep == 0.0:
        assert expected == pytest.approx(0.0, abs=1e-12)


def test_lapse_gain_matches_monte_carlo_mutual_information() -> None:
    """Sampled (z, y) with y uniform for a lapsing rater: E[log p(y | z) - log p(y)]."""
    rng = np.random.default_rng(SEED)
    mu, sd, noise_sd, cuts, keep = 0.3, 2.0, 1.0, [-0.5, 0.5], 0.7
    n_samples = 400_000
    z = rng.normal(mu, sd, n_samples)
    edges = np.array([-np.inf, *cuts, np.inf])
    model = np.searchsorted(edges, z + rng.normal(0.0, noise_sd, n_samples)) - 1
    y = np.where(rng.random(n_samples) < keep, model, rng.integers(0, 3, n_samples))
    conditional = ndtr((edges[y + 1] - z) / noise_sd) - ndtr((edges[y] - z) / noise_sd)
    c = math.sqrt(sd**2 + noise_sd**2)
    marginal = ndtr((edges[y + 1] - mu) / c) - ndtr((edges[y] - mu) / c)
    terms = np.log2(keep * conditional + (1 - keep) / 3) - np.log2(keep * marginal + (1 - keep) / 3)
    estimate, error = terms.mean(), terms.std() / math.sqrt(n_samples)
    got = float(expected_information_gain(t([mu]), t([sd**2]), noise_sd**2, t(cuts), keep=keep))
    assert abs(got - estimate) <= 5 * error


def test_lapse_gain_of_a_noise_free_rater_and_bad_keep() -> None:
    mu, var, cuts = t([0.4]), t([2.0]), t([-0.5, 0.5])
    expected = information_gain(0.4, 2.0, 1e-9, [-0.5, 0.5], 0.6)
    assert float(interval_information_gain(mu, var, 0.0, cuts, keep=0.6)) == pytest.approx(
        expected, abs=1e-6
    )
    with pytest.raises(ValueError, match="keep"):
        interval_information_gain(mu, var, 1.0, cuts, keep=1.5)


@pytest.mark.parametrize("keep", [1.0, 0.7])
@pytest.mark.parametrize("cuts", [[-0.5, 0.5], [-1.5, -0.5, 0.5, 1.5]])
def test_batched_gain_matches_the_plain_quadrature(cuts: list[float], keep: float) -> None:
    """The batched gain (one rater's panels shared by all candidates, each rule evaluated only
    on the candidates that take it, per-candidate noise the general way) equals the same
    quadrature rule written plainly, one candidate at a time, to rounding: same maths, less work.
    Narrow (Gauss-Hermite) and wide (panel) candidates are mixed, with sd = 0 and the switch."""
    rng = np.random.default_rng(SEED)
    noise_sd = 1.5
    mu = np.concatenate([rng.uniform(-12, 12, 46), [0.3, -0.4]])
    sd = np.concatenate([noise_sd * np.exp(rng.uniform(-4, 4, 46)), [0.0, noise_sd]])
    assert 10 < (sd < noise_sd).sum() < 38
    cuts_t = t(cuts)

    one_rater = [
        quadrature_information_gain(m, s * s, noise_sd, cuts, keep)
        for m, s in zip(mu, sd, strict=True)
    ]
    got = interval_information_gain(t(mu), t(sd**2), noise_sd**2, cuts_t, keep=keep)
    np.testing.assert_allclose(got.numpy(), one_rater, rtol=0, atol=1e-12)
    # the same noise given per candidate takes the general path: same numbers
    same_noise = torch.full((mu.size,), noise_sd**2)
    general = interval_information_gain(t(mu), t(sd**2), same_noise, cuts_t, keep=keep)
    torch.testing.assert_close(general, got, rtol=0, atol=1e-12)
    # batch shape and order survive the gather and scatter of the two rules
    grid = interval_information_gain(
        t(mu).view(6, 8), t(sd**2).view(6, 8), noise_sd**2, cuts_t, keep=keep
    )
    torch.testing.assert_close(grid.flatten(), got, rtol=0, atol=1e-15)

    noise_sds = rng.uniform(0.3, 3.0, mu.size)
    per_candidate = [
        quadrature_information_gain(m, s * s, n, cuts, keep)
        for m, s, n in zip(mu, sd, noise_sds, strict=True)
    ]
    got = interval_information_gain(t(mu), t(sd**2), t(noise_sds**2), cuts_t, keep=keep)
    np.testing.assert_allclose(got.numpy(), per_candidate, rtol=0, atol=1e-12)
    as32 = interval_information_gain(
        t(mu).float(), t(sd**2).float(), t(noise_sds**2).float(), cuts_t.float(), keep=keep
    )
    assert as32.dtype == torch.float32
    np.testing.assert_allclose(as32.double().numpy(), per_candidate, rtol=0, atol=1e-4)


SCREENS = {id(o.screen): o.screen for o in OBJECTIVES.values()}


@pytest.mark.parametrize("screen_id", sorted(SCREENS))
@pytest.mark.parametrize("noise_var", [0.05, 1.0, 4.0])
def test_screen_rates_bound_its_derivatives(screen_id: int, noise_var: float) -> None:
    """A screen's stated rates bound |ds/dmu| and |ds/dvar| on a fine grid (autograd through the
    formula written out), are nearly reached (not loose), the score never falls as the
    variance grows (so a pending task's shrink never raises one) and never rises as |mu|
    grows (so a prompt's pairs are bounded by its closest means and largest variance)."""
    screen = SCREENS[screen_id]
    assert screen.score is screening_score  # the one screen registered so far
    mu = math.sqrt(noise_var) * torch.linspace(-30, 30, 1201).repeat_interleave(200)
    var = noise_var * torch.logspace(-8, 3, 200).repeat(1201)
    mu.requires_grad_(True)
    var.requires_grad_(True)
    # screening_score's formula written out (it computes in place, which autograd refuses)
    c2, sigma = math.pi * math.log(2) / 2, math.sqrt(noise_var)
    spread = var + c2 * noise_var
    score = torch.exp(-(mu**2) / (2 * c2 * (var + noise_var))) - math.sqrt(
        c2
    ) * sigma / spread.sqrt() * torch.exp(-(mu**2) / (2 * spread))
    torch.testing.assert_close(score.detach(), screen.score(mu.detach(), var.detach(), noise_var))
    d_mu, d_var = torch.autograd.grad(score.sum(), (mu, var))
    l_mu, l_var = screen.rates(noise_var)
    assert float(d_mu.abs().max()) <= l_mu
    assert float(d_var.abs().max()) <= l_var
    assert float(d_var.min()) >= 0.0
    assert float((d_mu * mu.detach().sign()).max()) <= 0.0
    assert float(d_mu.abs().max()) > 0.999 * l_mu and float(d_var.abs().max()) > 0.999 * l_var


def monotone_grid() -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, var) on a 161 x 120 grid, var fastest (float64: built inside the test)."""
    return (
        torch.linspace(-12, 12, 161).repeat_interleave(120),
        torch.logspace(-6, 4, 120).repeat(161),
    )


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
@pytest.mark.parametrize("keep", [1.0, 0.8])
def test_forced_choice_gains_never_fall_as_the_variance_grows(name: str, keep: float) -> None:
    """Forced choice: along var (fine grid, mu fixed) the gain never drops (to rounding), and
    the objective's rise bound is 0: a gain computed before a pending pick bounds the one after,
    as the lazy greedy assumes."""
    objective = OBJECTIVES[name]
    cuts = t([0.0])
    assert objective.rise(cuts, 1.0) == 0.0
    mu, var = monotone_grid()
    gain = objective(mu, var, 1.0, cuts, keep=keep).reshape(161, 120)
    assert float((gain[:, 1:] - gain[:, :-1]).min()) > -1e-12


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_with_ties_a_variance_drop_can_raise_the_gain_by_less_than_the_rise_bound(
    name: str,
) -> None:
    """Ties: a smaller variance can give a larger gain (t = sigma: by ~0.08 bits), never by more
    than `rise(cuts, noise)`, on random draws of mu, var > var', t / sigma in [0, 8], noise and
    keep in [0.5, 1] (the bound is taken at keep 1 and rounded-up margins: the rise grows with
    t / sigma up to 4 and shrinks with the keep probability, both checked here)."""
    objective = OBJECTIVES[name]
    mu, var = monotone_grid()
    gain = objective(mu, var, 1.0, t([-1.0, 1.0])).reshape(161, 120)
    assert float((torch.cummax(gain, dim=1).values - gain).max()) > 0.05
    rng = np.random.default_rng(SEED)
    for noise_var in (0.25, 1.0, 4.0):
        sigma = math.sqrt(noise_var)
        for margin in rng.uniform(0, 8, 6):
            cuts = t([-margin * sigma, margin * sigma])
            bound = objective.rise(cuts, noise_var)
            count = 4000
            mu = t(rng.uniform(-12, 12, count) * sigma)
            high = t(10 ** rng.uniform(-4, 3, count) * noise_var)
            low = high * t(rng.uniform(0, 1, count))
            keep = float(rng.uniform(0.5, 1.0))
            for k in (1.0, keep):
                rise = objective(mu, low, noise_var, cuts, keep=k) - objective(
                    mu, high, noise_var, cuts, keep=k
                )
                assert float(rise.max()) <= bound, (noise_var, margin, k)
    rises = [objective.rise(t([-m, m]), 1.0) for m in (0.5, 1.0, 2.0, 3.0, 4.0)]
    assert rises == sorted(rises)


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_the_rise_bound_at_a_keep_probability_bounds_every_lower_keep(name: str) -> None:
    """The rise bound taken at the rater's keep probability (rounded up to its grid) bounds the
    rise of a rater with that keep or less, on random draws of mu, var > var', t / sigma in
    [0, 8] (dense near the service's 0.34) and noise; it grows with keep, and at small
    t / sigma a lapsing rater's gain never falls as the variance grows (the bound is ~0)."""
    objective = OBJECTIVES[name]
    rng = np.random.default_rng(SEED + 1)
    for noise_var in (0.25, 2.2):
        sigma = math.sqrt(noise_var)
        for margin in [*rng.uniform(0.25, 0.6, 3), *rng.uniform(0, 8, 2)]:
            cuts = t([-margin * sigma, margin * sigma])
            count = 2000
            mu = t(rng.uniform(-12, 12, count) * sigma)
            high = t(10 ** rng.uniform(-4, 3, count) * noise_var)
            low = high * t(rng.uniform(0, 1, count))
            for keep in (*rng.uniform(0.5, 1.0, 2), 0.9, 0.95):
                bound = objective.rise(cuts, noise_var, float(keep))
                assert bound <= objective.rise(cuts, noise_var)
                for k in (keep, keep - 0.01, 0.5):
                    rise = objective(mu, low, noise_var, cuts, keep=float(k)) - objective(
                        mu, high, noise_var, cuts, keep=float(k)
                    )
                    assert float(rise.max()) <= bound, (noise_var, margin, keep, k)
    for m in (0.35, 1.0, 3.0):
        rises = [objective.rise(t([-m, m]), 1.0, k) for k in (0.5, 0.7, 0.85, 0.95, 1.0)]
        # non-decreasing, up to the quadrature's rounding where the rise is 0
        assert all(b >= a - 1e-12 for a, b in itertools.pairwise(rises))
    assert objective.rise(t([-0.35, 0.35]), 1.0, 0.9) < 1e-8
