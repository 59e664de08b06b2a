"""The ADF update against Monte Carlo, exact 1-D quadrature and exact Gaussian conditioning."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from engine.likelihoods import LIKELIHOODS, Outcome
from engine.state import PriorScales, add_contexts, add_items, empty_posterior
from engine.update import (
    FEW_EVENTS,
    Events,
    cavity_moments,
    level_events,
    pair_events,
    update,
    update_with_evidence,
)
from tests.engine.reference import tilted_moments

SEED = 0
PRIOR = PriorScales(weight_scale=0.8, context_scale=0.3, residual_scale=0.6)
N_SAMPLES = 2_000_000


def small_posterior(n_items: int = 4, n_criteria: int = 2, seed: int = SEED):
    """Clips in two contexts with random standardised scores: theta = (f, w, w_c0, w_c1)."""
    generator = torch.Generator().manual_seed(seed)
    posterior = add_contexts(empty_posterior(n_criteria, PRIOR), 2, PRIOR)
    scores = torch.randn(n_items, n_criteria, generator=generator)
    context = torch.arange(n_items) % 2
    return add_items(posterior, scores, context, PRIOR), scores, context


def _direction(size: int, first: int, second: int) -> torch.Tensor:
    a = torch.zeros(size)
    a[first] = 1.0
    if second >= 0:
        a[second] -= 1.0
    return a


def _event(first: int, second: int, lo: float, hi: float, noise_sd: float) -> Events:
    t = torch.tensor
    return Events(t([first]), t([second]), t([lo]), t([hi]), t([noise_sd**2]))


@pytest.mark.parametrize(
    ("first", "second", "lo", "hi", "noise_sd"),
    [
        (0, 1, 0.0, math.inf, 0.7),  # win
        (2, 3, -0.4, 0.4, 0.5),  # tie
        (1, -1, 0.5, 1.5, 0.6),  # emoji level (ordered probit)
        (3, -1, -math.inf, -1.2, 0.4),  # lowest emoji level, in the tail
    ],
)
def test_update_matches_importance_sampling(
    first: int, second: int, lo: float, hi: float, noise_sd: float
) -> None:
    """Mean and covariance of theta | event by importance sampling from the prior."""
    posterior, _, _ = small_posterior()
    after = update(posterior, _event(first, second, lo, hi, noise_sd))
    rng = np.random.default_rng(SEED)
    mean, cov = posterior.mean.numpy(), posterior.cov.numpy()
    theta = rng.multivariate_normal(mean, cov, size=N_SAMPLES, method="eigh")
    z = theta @ _direction(mean.size, first, second).numpy()
    from scipy.special import ndtr

    weight = ndtr((hi - z) / noise_sd) - ndtr((lo - z) / noise_sd)
    weight /= weight.sum()
    ess = 1.0 / np.sum(weight**2)
    assert ess > 50_000
    mc_mean = weight @ theta
    centred = theta - mc_mean
    mc_cov = (centred * weight[:, None]).T @ centred
    scale = np.sqrt(np.diag(cov))
    # Monte Carlo error ~ sd / sqrt(ESS) ~ 0.005 sd: 6 standard errors.
    tolerance = 6.0 / math.sqrt(ess)
    np.testing.assert_allclose(after.mean.numpy() / scale, mc_mean / scale, atol=tolerance)
    np.testing.assert_allclose(
        after.cov.numpy() / np.outer(scale, scale),
        mc_cov / np.outer(scale, scale),
        atol=3 * tolerance,
    )


@pytest.mark.parametrize("surprise", [5.0, 20.0, 40.0])
def test_update_in_the_far_tail_matches_exact_projection(surprise: float) -> None:
    """A win against odds of Phi(-40): m' and S' from 1-D quadrature of z | y (MATH.md §1: the
    event depends on theta only through z, so theta | y is Gaussian-projected through z)."""
    posterior, _, _ = small_posterior()
    a = _direction(posterior.mean.numel(), 0, 1)
    noise_sd = 0.5
    s2 = float(a @ posterior.cov @ a)
    c = math.sqrt(s2 + noise_sd**2)
    # Move the prior mean so that mu / c = -surprise along a (a prior we are allowed to pick).
    column = posterior.cov @ a
    shift = (-surprise * c - float(a @ posterior.mean)) / s2
    prior = type(posterior)(posterior.mean + shift * column, posterior.cov, posterior.n_items, 2, 2)
    mu = float(a @ prior.mean)
    _, z_mean, z_var = tilted_moments(mu, s2, 0.0, math.inf, noise_sd)
    after = update(prior, _event(0, 1, 0.0, math.inf, noise_sd))
    expected_mean = prior.mean + column * (z_mean - mu) / s2
    expected_cov = prior.cov - torch.outer(column, column) * (s2 - z_var) / s2**2
    assert torch.isfinite(after.mean).all() and torch.isfinite(after.cov).all()
    torch.testing.assert_close(after.mean, expected_mean, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(after.cov, expected_cov, rtol=1e-6, atol=1e-8)
    assert float(a @ after.cov @ a) <= s2


def _exact_conditioning(mean, cov, directions, values, noise_var):
    """Kalman: theta | (A theta + eps = y), eps ~ N(0, noise_var I). Dense, in one step."""
    gram = directions @ cov @ directions.T + noise_var * torch.eye(len(values))
    gain = torch.linalg.solve(gram, directions @ cov).T
    return mean + gain @ (values - directions @ mean), cov - gain @ directions @ cov


def test_gaussian_observations_equal_exact_conditioning() -> None:
    """Narrow intervals [y - d, y + d] are Gaussian observations of y with noise sigma^2 (to
    O(d^2)); sequential ADF of several must equal one exact joint conditioning."""
    posterior, _, _ = small_posterior(n_items=5)
    size = posterior.mean.numel()
    pairs = [(0, 1), (2, 3), (1, 4), (0, 3), (4, -1)]
    values = torch.tensor([0.8, -0.3, 1.1, 0.2, -0.6])
    noise_sd, half_width = 0.5, 1e-3
    events = Events(
        torch.tensor([p[0] for p in pairs]),
        torch.tensor([p[1] for p in pairs]),
        values - half_width,
        values + half_width,
        torch.full((5,), noise_sd**2),
    )
    after = update(posterior, events)
    directions = torch.stack([_direction(size, i, j) for i, j in pairs])
    # A uniform interval of half-width d adds d^2 / 3 to the noise variance.
    mean, cov = _exact_conditioning(
        posterior.mean, posterior.cov, directions, values, noise_sd**2 + half_width**2 / 3
    )
    torch.testing.assert_close(after.mean, mean, rtol=0, atol=1e-8)
    torch.testing.assert_close(after.cov, cov, rtol=0, atol=1e-8)


def test_layout_is_the_w_u_model_of_math_section_1() -> None:
    """The (f, w) layout describes the same Gaussian as MATH.md's theta = (w, u): exact
    conditioning in (w, u) space, mapped to f = X theta, equals the engine after the same
    (Gaussian) observations, including clips added after the observations."""
    posterior, scores, context = small_posterior(n_items=4)
    n_criteria = 2
    noise_sd, half_width = 0.7, 1e-3
    pairs, values = [(0, 1), (2, 3), (1, 2)], torch.tensor([0.5, -0.7, 0.2])
    events = Events(
        torch.tensor([p[0] for p in pairs]),
        torch.tensor([p[1] for p in pairs]),
        values - half_width,
        values + half_width,
        torch.full((3,), noise_sd**2),
    )
    engine_after = update(posterior, events)
    new_scores = torch.tensor([[0.3, -1.2], [1.5, 0.4]])
    new_context = torch.tensor([1, 0])
    engine_after = add_items(engine_after, new_scores, new_context, PRIOR)

    # (w, w_c0, w_c1, u_0..u_5): the model written out densely, all six clips from the start.
    all_scores, all_context = torch.cat((scores, new_scores)), torch.cat((context, new_context))
    n_items, n_weights = 6, 3 * n_criteria
    prior_cov = torch.diag(
        torch.cat(
            (
                torch.full((n_criteria,), PRIOR.weight_scale**2),
                torch.full((2 * n_criteria,), PRIOR.context_scale**2),
                torch.full((n_items,), PRIOR.residual_scale**2),
            )
        )
    )
    design = torch.zeros(n_items, n_weights + n_items)  # f = design @ theta
    for i in range(n_items):
        design[i, :n_criteria] = all_scores[i]
        start = n_criteria * (1 + int(all_context[i]))
        design[i, start : start + n_criteria] = all_scores[i]
        design[i, n_weights + i] = 1.0
    directions = torch.stack([design[i] - design[j] for i, j in pairs])
    mean, cov = _exact_conditioning(
        torch.zeros(n_weights + n_items),
        prior_cov,
        directions,
        values,
        noise_sd**2 + half_width**2 / 3,
    )
    f_mean, f_cov = design @ mean, design @ cov @ design.T
    torch.testing.assert_close(engine_after.item_mean, f_mean, atol=1e-8, rtol=0)
    torch.testing.assert_close(engine_after.item_cov, f_cov, atol=1e-8, rtol=0)
    index = engine_after.weight_index()
    torch.testing.assert_close(engine_after.mean[index], mean[:n_criteria], atol=1e-8, rtol=0)


@given(
    first=st.integers(0, 3),
    offset=st.integers(1, 3),
    single=st.booleans(),
    lo=st.floats(-6, 6),
    width=st.one_of(st.floats(1e-3, 8), st.just(math.inf)),
    open_below=st.booleans(),
    noise_sd=st.floats(0.0, 3.0),
    mean_shift=st.floats(-80, 80),
)
def test_no_variance_grows_and_covariance_stays_psd(
    first: int,
    offset: int,
    single: bool,
    lo: float,
    width: float,
    open_below: bool,
    noise_sd: float,
    mean_shift: float,
) -> None:
    posterior, _, _ = small_posterior()
    second = -1 if single else (first + offset) % 4
    hi = lo + width
    if open_below and math.isfinite(hi):
        lo = -math.inf
    prior = type(posterior)(
        posterior.mean + mean_shift * (torch.arange(posterior.mean.numel()) == first),
        posterior.cov,
        posterior.n_items,
        2,
        2,
    )
    after = update(prior, _event(first, second, lo, hi, noise_sd))
    a = _direction(prior.mean.numel(), first, second)
    assert torch.isfinite(after.mean).all()
    assert float(a @ after.cov @ a) <= float(a @ prior.cov @ a) + 1e-12
    assert bool((torch.diagonal(after.cov) <= torch.diagonal(prior.cov) + 1e-12).all())
    # BLAS ger (FMA in the vector body) keeps symmetry to round-off, not bit for bit.
    torch.testing.assert_close(after.cov, after.cov.T, rtol=0, atol=1e-12)
    assert float(torch.linalg.eigvalsh(after.cov).min()) >= -1e-10


def test_a_batch_equals_the_same_events_one_by_one_and_inputs_are_untouched() -> None:
    posterior, _, _ = small_posterior(n_items=6)
    before_mean, before_cov = posterior.mean.clone(), posterior.cov.clone()
    like = posterior.mean
    events = pair_events(
        [0, 2, 4, 1],
        [1, 3, 5, 5],
        [Outcome.WIN, Outcome.TIE, Outcome.LOSS, Outcome.WIN],
        tie_margin=0.3,
        noise_sd=[0.5, 1.0, 0.8, 0.5],
        like=like,
    )
    batched = update(posterior, events)
    one_by_one = posterior
    for b in range(len(events)):
        single = Events(
            *(getattr(events, f)[b : b + 1] for f in ("first", "second", "lo", "hi", "noise_var"))
        )
        one_by_one = update(one_by_one, single)
    # the batch defers its covariance steps into one GEMM: the same ADF up to round-off
    torch.testing.assert_close(batched.mean, one_by_one.mean, rtol=0, atol=1e-13)
    torch.testing.assert_close(batched.cov, one_by_one.cov, rtol=0, atol=1e-13)
    assert torch.equal(posterior.mean, before_mean) and torch.equal(posterior.cov, before_cov)


def test_deferred_steps_match_plain_rank_one_steps_over_many_flushes() -> None:
    """100 events (3 flushes of 32 and a rest) against the textbook m += S a g, S += h (S a)
    (S a)' applied event by event with the same moments."""
    posterior, _, _ = small_posterior(n_items=6)
    rng = torch.Generator().manual_seed(0)
    first = torch.randint(0, 6, (100,), generator=rng)
    second = (first + torch.randint(1, 6, (100,), generator=rng)) % 6
    outcomes = [Outcome.WIN if k % 3 else Outcome.LOSS for k in range(100)]
    events = pair_events(
        first.tolist(), second.tolist(), outcomes, tie_margin=0.0, noise_sd=1.0, like=posterior.mean
    )
    batched = update(posterior, events)
    mean, cov = posterior.mean.clone(), posterior.cov.clone()
    for b in range(100):
        a = torch.zeros_like(mean)
        a[first[b]], a[second[b]] = 1.0, -1.0
        column = cov @ a
        moments = LIKELIHOODS["interval"](
            a @ mean, a @ column, events.lo[b], events.hi[b], events.noise_var[b]
        )
        mean += column * moments.dlog_z
        cov += moments.d2log_z * torch.outer(column, column)
    torch.testing.assert_close(batched.mean, mean, rtol=0, atol=1e-11)
    torch.testing.assert_close(batched.cov, cov, rtol=0, atol=1e-11)


def test_the_scalar_moments_path_equals_the_tensor_path_with_lapses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`update` takes the Python-float moments (SCALAR_LIKELIHOODS); the same events through
    the tensor moments alone (a likelihood without a scalar form) give the same posterior and
    evidence, lapses and emoji levels included."""
    posterior, _, _ = small_posterior(n_items=6)
    monkeypatch.setitem(LIKELIHOODS, "interval_tensor_only", LIKELIHOODS["interval"])
    rng = torch.Generator().manual_seed(1)
    first = torch.randint(0, 6, (40,), generator=rng)
    second = (first + torch.randint(1, 6, (40,), generator=rng)) % 6
    second[::5] = -1  # every fifth an emoji level on one clip
    lo = torch.where(second < 0, -0.5, 0.5).double()
    hi = torch.where(second < 0, 0.5, math.inf).double()
    events = Events(
        first,
        second,
        lo,
        hi,
        torch.full((40,), 1.3, dtype=torch.float64),
        keep=torch.linspace(0.2, 1.0, 40, dtype=torch.float64),
        n_outcomes=torch.where(second < 0, 5.0, 3.0).double(),
    )
    scalar = update_with_evidence(posterior, events)
    tensor = update_with_evidence(posterior, events, likelihood="interval_tensor_only")
    torch.testing.assert_close(scalar.posterior.mean, tensor.posterior.mean, rtol=0, atol=1e-12)
    torch.testing.assert_close(scalar.posterior.cov, tensor.posterior.cov, rtol=0, atol=1e-12)
    torch.testing.assert_close(scalar.model_log_z, tensor.model_log_z, rtol=0, atol=1e-12)
    assert scalar.log_evidence == pytest.approx(tensor.log_evidence, rel=1e-12)


def _lapsed_events(n_items: int, count: int, seed: int) -> Events:
    """`count` random wins, ties and emoji levels, with lapses on some (a lapse step can widen
    the posterior: a site of negative precision)."""
    rng = torch.Generator().manual_seed(seed)
    first = torch.randint(0, n_items, (count,), generator=rng)
    second = (first + torch.randint(1, n_items, (count,), generator=rng)) % n_items
    second[::4] = -1  # every fourth an emoji level on one clip
    kind = torch.arange(count) % 3
    lo = torch.where(second < 0, -0.5, torch.where(kind == 1, -0.3, 0.3)).double()
    hi = torch.where(second < 0, 0.5, torch.where(kind == 1, 0.3, math.inf)).double()
    return Events(
        first,
        second,
        lo,
        hi,
        torch.linspace(0.3, 1.5, count, dtype=torch.float64) ** 2,
        keep=torch.where(torch.arange(count) % 2 == 0, 1.0, 0.7).double(),
        n_outcomes=torch.where(second < 0, 5.0, 3.0).double(),
    )


def test_the_adf_posterior_is_the_prior_times_its_sites_and_cavities_condition_exactly() -> None:
    """ADF's sites (MATH.md eq. (2.1)): the prior's natural parameters plus each site's
    tau a a' and nu a give the ADF posterior; and each event's cavity (eq. (2.2)) from the
    posterior marginal equals the marginal of the posterior recomputed densely without that
    event's site (the prior conditioned on the other sites, in natural parameters)."""
    posterior, _, _ = small_posterior(n_items=6)
    events = _lapsed_events(6, 30, seed=3)
    result = update_with_evidence(posterior, events)
    sites = result.sites
    assert bool((sites.precision < 0).any())  # a lapse step that widened the posterior
    size = posterior.mean.numel()
    directions = torch.stack(
        [
            _direction(size, i, j)
            for i, j in zip(events.first.tolist(), events.second.tolist(), strict=True)
        ]
    )  # B x size
    prior_precision = torch.linalg.inv(posterior.cov)
    prior_shift = prior_precision @ posterior.mean
    precision = prior_precision + directions.T @ (sites.precision[:, None] * directions)
    shift = prior_shift + directions.T @ sites.shift
    torch.testing.assert_close(
        torch.linalg.inv(precision), result.posterior.cov, rtol=1e-8, atol=1e-10
    )
    torch.testing.assert_close(
        torch.linalg.solve(precision, shift), result.posterior.mean, rtol=1e-8, atol=1e-10
    )
    mu = directions @ result.posterior.mean
    var = torch.einsum("bi,ij,bj->b", directions, result.posterior.cov, directions)
    cavity_mu, cavity_var = cavity_moments(mu, var, sites)
    for b in range(len(events)):
        a = directions[b]
        left_out = precision - sites.precision[b] * torch.outer(a, a)
        cov = torch.linalg.inv(left_out)
        mean = cov @ (shift - sites.shift[b] * a)
        assert float(cavity_var[b]) == pytest.approx(float(a @ cov @ a), rel=1e-8)
        assert float(cavity_mu[b]) == pytest.approx(float(a @ mean), rel=1e-8, abs=1e-10)


def test_a_fresh_events_cavity_is_the_marginal_it_was_applied_under() -> None:
    """Right after an event is applied, its cavity is the marginal before it (eq. (2.2)
    undoes eq. (2.1))."""
    posterior, _, _ = small_posterior(n_items=6)
    events = _lapsed_events(6, 9, seed=5)
    before = update(posterior, Events(*(getattr(events, f)[:8] for f in _FIELDS)))
    result = update_with_evidence(before, Events(*(getattr(events, f)[8:] for f in _FIELDS)))
    a = _direction(posterior.mean.numel(), int(events.first[8]), int(events.second[8]))
    mu, var = a @ result.posterior.mean, a @ result.posterior.cov @ a
    cavity_mu, cavity_var = cavity_moments(mu[None], var[None], result.sites)
    assert float(cavity_mu) == pytest.approx(float(a @ before.mean), rel=1e-9, abs=1e-12)
    assert float(cavity_var) == pytest.approx(float(a @ before.cov @ a), rel=1e-9)


_FIELDS = ("first", "second", "lo", "hi", "noise_var", "keep", "n_outcomes")


def test_bad_events_are_rejected() -> None:
    posterior, _, _ = small_posterior()
    with pytest.raises(IndexError):
        update(posterior, _event(0, 7, 0.0, math.inf, 1.0))
    with pytest.raises(ValueError, match="lo < hi"):
        _event(0, 1, 1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="two different clips"):
        _event(2, 2, 0.0, math.inf, 1.0)
    with pytest.raises(KeyError):
        update(posterior, _event(0, 1, 0.0, math.inf, 1.0), likelihood="nope")
    degenerate = type(posterior)(
        posterior.mean, torch.zeros_like(posterior.cov), posterior.n_items, 2, 2
    )
    with pytest.raises(ValueError, match="degenerate"):
        update(degenerate, _event(0, 1, 0.0, math.inf, 0.0))


@pytest.mark.parametrize("count", [1, FEW_EVENTS, FEW_EVENTS + 1])
@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("lo", math.nan, "lo < hi"),
        ("hi", -1.0, "lo < hi"),
        ("noise_var", -1.0, "finite and >= 0"),
        ("noise_var", math.inf, "finite and >= 0"),
        ("noise_var", math.nan, "finite and >= 0"),
        ("second", 0, "two different clips"),
    ],
)
def test_few_and_many_events_are_checked_alike(
    count: int, field: str, value: float, message: str
) -> None:
    """Up to FEW_EVENTS events are checked in Python numbers, more by torch reductions: both
    pass good events and reject one bad entry, wherever it sits."""
    fields = {
        "first": torch.zeros(count, dtype=torch.long),
        "second": torch.ones(count, dtype=torch.long),
        "lo": torch.zeros(count, dtype=torch.float64),
        "hi": torch.full((count,), math.inf, dtype=torch.float64),
        "noise_var": torch.ones(count, dtype=torch.float64),
    }
    assert len(Events(**fields)) == count
    fields[field] = fields[field].clone()
    fields[field][-1] = value
    with pytest.raises(ValueError, match=message):
        Events(**fields)


def test_level_events_and_float32_smoke() -> None:
    posterior, _, _ = small_posterior()
    events = level_events(
        [0, 1], [0, 4], thresholds=(-1.5, -0.5, 0.5, 1.5), noise_sd=0.7, like=posterior.mean
    )
    after = update(posterior, events)
    assert float(after.mean[0]) < float(posterior.mean[0])
    assert float(after.mean[1]) > float(posterior.mean[1])
    as32 = type(posterior)(posterior.mean.float(), posterior.cov.float(), posterior.n_items, 2, 2)
    after32 = update(
        as32, level_events([0], [2], thresholds=(-1.0, 1.0), noise_sd=1.0, like=as32.mean)
    )
    assert after32.mean.dtype == torch.float32 and torch.isfinite(after32.cov).all()
