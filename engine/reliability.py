"""What a rater is like, learned from their labels: how noisy, and how often they click at random.

A rater answers as the model says with probability `keep` (with their own Thurstone noise
sd sigma_r), and clicks one of the L outcomes at random otherwise (MATH.md §3, lapse paragraph;
the random-click form of the lapse, which also covers ties and emoji levels). Given each of
the rater's labels' marginal under its cavity (the posterior of all the other labels, MATH.md
§2, eq. (2.2): under the posterior that holds the label, sigma runs low), the joint posterior
of (keep, sigma_r) is two-dimensional and is evaluated exactly on a grid:

    p(keep, sigma | labels) ∝ p(keep) p(sigma) prod_k (keep Z_k(sigma) + (1 - keep) / L_k),
    Z_k(sigma) = P(z_k + eps in [lo_k, hi_k]),  z_k ~ N(mu_-k, s2_-k),  eps ~ N(0, sigma^2).

The keep prior mixes a point mass at 0 (a share of pure random clickers) with a
Beta(alpha, beta); sigma's prior is log-normal around the campaign's default noise, its
spread fitted across raters by empirical Bayes (`fit_noise_spread`). (EM on the
keep likelihood stalls for random clickers: at keep = 0 its slope, sum_k (Z_k L_k - 1), is zero
on average for random answers, so the grid is used instead.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from scipy.optimize import minimize_scalar
from torch import Tensor

from engine.likelihoods import interval_moments

KEEP_POINTS = 400  # grid over keep in [0, 1)
NOISE_POINTS = 33  # grid over log sigma, 0.13 apart
# sigma from default / 8 to default x 8: 2.6 sd of a log-noise spread of 0.8, so the
# spread's refit is not pulled up by raters the grid cannot reach
NOISE_SPAN = 8.0
NOISE_PRIOR_LOG_SD = 0.5  # prior sd of log sigma around the default noise, until fitted
# The default keep prior, the service's and the simulator's: a careful rater answers by the
# model ~95 % of the time (Beta(19, 1)), with a share of pure random clickers besides
# (CampaignConfig.random_rater_share). Under Beta(9, 1) information gain's intervals came out
# wide both where nobody lapses and where every rater clicks at random 10 % of the time;
# under Beta(19, 1) within 0.05 of nominal in both (benchmarks/results/coverage_lapse.md).
KEEP_PRIOR = (19.0, 1.0)
# the keep prior's alpha that empirical Bayes may choose (with beta = 1, a mean keep from 1/2
# on); past KEEP_POINTS the Beta(alpha, 1) puts nearly all its mass on the grid's last point
KEEP_ALPHA_BOUNDS = (1.0, float(KEEP_POINTS))
SPREAD_BOUNDS = (0.02, 2.0)  # the fitted sd of log sigma: from alike raters to a 50x range
FLAG_PROBABILITY = 0.5  # flagged once P(keep < 1/2) exceeds this: more likely random than not
GRID_CHUNK_CELLS = 2**18  # labels x keep x sigma cells formed at once: 2 MB (1-4 MB measured alike)
LABELS_PER_LOG = 8  # a rater's label terms multiplied before one log (a power of 2)
PRODUCT_LOG_FLOOR = -600.0  # log of the smallest product allowed: far above underflow (-708)


@dataclass(frozen=True)
class RaterReliability:
    """A rater's posterior: keep probability (mean, 90 % interval, P(keep < 1/2)), noise sd
    (posterior mean), labels seen, and whether their labels look random."""

    keep: float
    keep_low: float
    keep_high: float
    probability_random: float
    noise_sd: float
    labels: int
    flagged: bool


@dataclass(frozen=True)
class RaterGrid:
    """One rater's labels on the (keep, sigma) grid: `log_likelihood` (G, S) of their labels,
    the keep grid (G,) with its log prior, and the log sigma grid (S,)."""

    log_likelihood: Tensor
    keep: Tensor
    log_keep_prior: Tensor
    log_sigma: Tensor
    labels: int


def _grid_axes(
    like: Tensor,
    *,
    default_noise_sd: float,
    keep_prior: tuple[float, float] | None,
    random_share: float,
    learn_noise: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """The keep grid (G,) with its log prior (the point mass at 0 plus the Beta), and the log
    sigma grid (S,), in `like`'s dtype and device (module docstring)."""
    if keep_prior is None:
        keep_grid = like.new_ones(1)
        log_keep_prior = like.new_zeros(1)
    else:
        keep_grid = torch.linspace(0.0, 1.0, KEEP_POINTS + 1, dtype=like.dtype)[:-1].to(like)
        log_keep_prior = log_keep_prior_on(keep_grid, keep_prior, random_share)
    if learn_noise:
        log_sigma = math.log(default_noise_sd) + torch.linspace(
            -math.log(NOISE_SPAN), math.log(NOISE_SPAN), NOISE_POINTS, dtype=like.dtype
        ).to(like)
    else:
        log_sigma = like.new_tensor([math.log(default_noise_sd)])
    return keep_grid, log_keep_prior, log_sigma


def log_keep_prior_on(
    keep_grid: Tensor, keep_prior: tuple[float, float], random_share: float
) -> Tensor:
    """log p(keep) on the keep grid (whose first point is 0): the point mass `random_share`
    at 0 and Beta(alpha, beta) over the rest, normalised over the grid (so evidences for
    different priors compare)."""
    alpha, beta = keep_prior
    inner = keep_grid[1:]
    log_beta = (alpha - 1) * torch.log(inner) + (beta - 1) * torch.log1p(-inner)
    log_beta = torch.log_softmax(log_beta, 0) + math.log(1 - random_share)
    return torch.cat((keep_grid.new_tensor([math.log(random_share)]), log_beta))


def _product_groups(rater: Tensor, n_raters: int, per_log: int) -> list[tuple[int, Tensor]]:
    """Each rater's labels, in order, cut into runs to be multiplied before one log: runs of
    `per_log` (a power of 2), then the rest as runs of the powers of 2 that sum to it (13
    labels at 8: 8, 4, 1), so that no run is padded and a rater's runs do not depend on the
    other raters'.

    Returns:
        Per run length m, descending: the labels (in rater, then label order) whose
        consecutive m-tuples are the runs of length m.
    """
    counts = torch.bincount(rater, minlength=n_raters)  # R
    order = torch.argsort(rater, stable=True)  # N: labels by rater, in order within each
    own = counts[rater[order]]  # N: each label's rater's count
    position = (
        torch.arange(rater.numel(), device=rater.device)
        - (torch.cumsum(counts, 0) - counts)[rater[order]]
    )  # N: the label's place among its rater's labels
    bound = own - own % per_log  # labels before this are in full runs of per_log
    length = torch.where(position < bound, per_log, 0)
    rest = own % per_log
    size = per_log // 2
    while size:
        # the next `size` labels form one run when the rest has that bit
        upper = bound + (rest & size)
        length = torch.where((position >= bound) & (position < upper), size, length)
        bound = upper
        size //= 2
    runs: list[tuple[int, Tensor]] = []
    size = per_log
    while size:
        members = order[length == size]
        if members.numel():
            runs.append((size, members))
        size //= 2
    return runs


def rater_grids(
    mu: Tensor,
    var: Tensor,
    lo: Tensor,
    hi: Tensor,
    n_outcomes: Tensor,
    rater: Tensor,
    n_raters: int,
    *,
    default_noise_sd: float,
    keep_prior: tuple[float, float] | None,
    random_share: float,
    learn_noise: bool,
) -> list[RaterGrid]:
    """`log prod_{k of r} (keep Z_k(sigma) + (1 - keep) / L_k)` on the grid, for each of R
    raters at once from all their N labels (MATH.md §3, lapse paragraph; module docstring).

    All labels' G x S terms are formed together (no loop over labels or raters), in chunks.
    The log is most of the cost, so runs of up to LABELS_PER_LOG consecutive labels of a rater
    are multiplied first and each product's log is added to the rater's grid by `index_add_`:
    one log per run, as accurate as summing the run's logs (both err by ~run length x eps). A
    rater's runs depend on their own labels only: their grid is the same whichever other
    raters share the call.

    Args:
        mu, var: (N,) the marginal each label's z is scored under: its cavity, the
            posterior of the other labels (docs/MATH.md §2, eq. (2.2); the campaign's).
        lo, hi: (N,) the interval each label says z + eps fell in.
        n_outcomes: (N,) outcomes of each question (for the random click).
        rater: (N,) long, which of the R raters gave each label (0 <= rater < R).
        n_raters: R; a rater without labels gets a zero log likelihood.
        default_noise_sd: the campaign's default sigma (centre of sigma's prior and grid).
        keep_prior: Beta(alpha, beta) of keep for non-random raters; None: keep = 1.
        random_share: prior probability that a rater only clicks at random (keep = 0).
        learn_noise: False pins sigma at the default.

    Returns:
        R grids, sharing the keep and sigma axes.
    """
    keep_grid, log_keep_prior, log_sigma = _grid_axes(
        mu,
        default_noise_sd=default_noise_sd,
        keep_prior=keep_prior,
        random_share=random_share,
        learn_noise=learn_noise,
    )
    n_keep, n_sigma = keep_grid.numel(), log_sigma.numel()
    noise_var = torch.exp(2 * log_sigma)  # S
    z = torch.exp(
        interval_moments(mu[:, None], var[:, None], lo[:, None], hi[:, None], noise_var).log_z
    )  # N x S
    random_click = (1 - keep_grid) / n_outcomes[:, None]  # N x G: does not depend on sigma
    # Multiplying m factors before the log is safe while each factor keep Z + (1 - keep) / L is
    # at least floor = min (1 - keep) / L > 0: m <= PRODUCT_LOG_FLOOR / log(floor) keeps the
    # product far above underflow. Without lapses (keep = 1) a factor is Z alone, which may
    # underflow: one log per label.
    floor = float(random_click.min()) if random_click.numel() else 0.0
    per_log = 1
    if 0 < floor < 1:
        most = min(LABELS_PER_LOG, int(PRODUCT_LOG_FLOOR / math.log(floor)))
        per_log = 2 ** int(math.log2(most)) if most >= 1 else 1  # a power of 2
    log_likelihood = mu.new_zeros(n_raters, n_keep, n_sigma)  # R x G x S
    # The labels x G x S mixture is formed in chunks of whole runs that fit in cache: whole, it
    # would be GBs for a campaign's full refit, and repeated passes over a cache-sized chunk
    # stay in cache instead of going to memory.
    chunk = max(per_log, GRID_CHUNK_CELLS // (n_keep * n_sigma) // per_log * per_log)
    buffer = mu.new_empty(min(chunk, mu.numel()), n_keep, n_sigma)
    for length, members in _product_groups(rater, n_raters, per_log):
        step = chunk // length * length  # whole runs per chunk
        for start in range(0, members.numel(), step):
            labels = members[start : start + step]
            count = labels.numel()
            mixture = torch.mul(keep_grid[:, None], z[labels, None, :], out=buffer[:count])
            mixture.add_(random_click[labels, :, None])  # keep Z_k(sigma) + (1 - keep) / L_k
            product = mixture.view(count // length, length, n_keep, n_sigma).prod(1)
            log_likelihood.index_add_(0, rater[labels[::length]], product.log_())
    counts = torch.bincount(rater, minlength=n_raters).tolist()
    # each grid owns its G x S: a view would keep the whole R x G x S alive as long as any
    # one rater's grid is kept (a campaign keeps them, from different batches)
    return [
        RaterGrid(log_likelihood[r].clone(), keep_grid, log_keep_prior, log_sigma, counts[r])
        for r in range(n_raters)
    ]


def rater_grid(
    mu: Tensor,
    var: Tensor,
    lo: Tensor,
    hi: Tensor,
    n_outcomes: Tensor,
    *,
    default_noise_sd: float,
    keep_prior: tuple[float, float] | None,
    random_share: float,
    learn_noise: bool,
) -> RaterGrid:
    """`log prod_k (keep Z_k(sigma) + (1 - keep) / L_k)` on the grid, for one rater's N labels:
    `rater_grids` with a single rater (MATH.md §3, lapse paragraph).

    Args:
        mu, var: (N,) the marginal each label's z is scored under: its cavity, the
            posterior of the other labels (docs/MATH.md §2, eq. (2.2); the campaign's).
        lo, hi: (N,) the interval each label says z + eps fell in.
        n_outcomes: (N,) outcomes of each question (for the random click).
        default_noise_sd: the campaign's default sigma (centre of sigma's prior and grid).
        keep_prior: Beta(alpha, beta) of keep for non-random raters; None: keep = 1.
        random_share: prior probability that a rater only clicks at random (keep = 0).
        learn_noise: False pins sigma at the default.
    """
    (grid,) = rater_grids(
        mu,
        var,
        lo,
        hi,
        n_outcomes,
        torch.zeros(mu.shape, dtype=torch.long, device=mu.device),
        1,
        default_noise_sd=default_noise_sd,
        keep_prior=keep_prior,
        random_share=random_share,
        learn_noise=learn_noise,
    )
    return grid


def log_noise_prior(grid: RaterGrid, default_noise_sd: float, spread: float) -> Tensor:
    """log p(sigma) on the grid: log-normal around the default with sd `spread` of log sigma,
    normalised over the grid (so evidences for different spreads compare)."""
    if grid.log_sigma.numel() == 1:
        return grid.log_sigma.new_zeros(1)
    return torch.log_softmax(
        -0.5 * ((grid.log_sigma - math.log(default_noise_sd)) / spread) ** 2, 0
    )


def rater_posteriors(
    grids: Sequence[RaterGrid], *, default_noise_sd: float, spread: float = NOISE_PRIOR_LOG_SD
) -> list[RaterReliability]:
    """The grid posterior of (keep, sigma), summarised, for each of R raters at once:
    `p(keep, sigma | labels_r) ∝ p(keep) p(sigma) exp(log_likelihood_r)` (module docstring).

    Args:
        grids: R grids on the same keep and sigma axes (as `rater_grids` makes them).
        default_noise_sd: the centre of sigma's prior.
        spread: the prior sd of log sigma.

    Returns:
        R summaries, in the order of `grids`.

    Raises:
        ValueError: grids on different axes.
    """
    if not grids:
        return []
    first = grids[0]
    keep_grid, log_sigma = first.keep, first.log_sigma
    for grid in grids[1:]:
        same = (grid.keep is keep_grid or torch.equal(grid.keep, keep_grid)) and (
            grid.log_sigma is log_sigma or torch.equal(grid.log_sigma, log_sigma)
        )
        if not same:
            raise ValueError("rater_posteriors needs grids on the same keep and sigma axes")
    log_post = (
        torch.stack([grid.log_likelihood for grid in grids])
        + first.log_keep_prior[:, None]
        + log_noise_prior(first, default_noise_sd, spread)[None, :]
    )  # R x G x S
    n_raters = len(grids)
    weight = torch.softmax(log_post.reshape(n_raters, -1), 1).reshape(log_post.shape)
    keep_weight = weight.sum(2)  # R x G
    cumulative = torch.cumsum(keep_weight, 1)
    levels = cumulative.new_tensor([0.05, 0.95]).expand(n_raters, 2).contiguous()
    # the 90 % interval's ends; a cumulative that rounds below 0.95 at the end takes the last
    ends = torch.searchsorted(cumulative, levels).clamp_max(keep_grid.numel() - 1)  # R x 2
    probability_random = keep_weight[:, keep_grid < 0.5].sum(1)
    summaries = torch.stack(
        (
            (keep_weight * keep_grid).sum(1),
            keep_grid[ends[:, 0]],
            keep_grid[ends[:, 1]],
            probability_random,
            (weight.sum(1) * torch.exp(log_sigma)).sum(1),
        ),
        1,
    ).tolist()  # one transfer for all raters
    return [
        RaterReliability(
            keep=keep,
            keep_low=low,
            keep_high=high,
            probability_random=random,
            noise_sd=noise_sd,
            labels=grid.labels,
            flagged=random > FLAG_PROBABILITY,
        )
        for (keep, low, high, random, noise_sd), grid in zip(summaries, grids, strict=True)
    ]


def rater_posterior(
    grid: RaterGrid, *, default_noise_sd: float, spread: float = NOISE_PRIOR_LOG_SD
) -> RaterReliability:
    """The grid posterior of (keep, sigma) for one rater (`rater_grid`), summarised:
    `rater_posteriors` of the one grid."""
    (summary,) = rater_posteriors([grid], default_noise_sd=default_noise_sd, spread=spread)
    return summary


def fit_noise_spread(grids: Sequence[RaterGrid], default_noise_sd: float) -> float:
    """Empirical Bayes for the rater-noise prior: the sd of log sigma across raters that
    maximises `sum_r log sum_{keep, sigma} p(labels_r | keep, sigma) p(keep) p(sigma)`.

    The prior's centre stays at the default noise: it sets the latent unit, which the prior
    scales are measured in. One bounded scalar search over log spread.

    Raises:
        ValueError: no rater grid, or grids without a noise axis.
    """
    if not grids or any(g.log_sigma.numel() < 2 for g in grids):
        raise ValueError("fitting the rater-noise prior needs raters with learned noise")
    first = grids[0]
    stacked = torch.stack([grid.log_likelihood for grid in grids])  # once for every evaluation

    def negative(log_spread: float) -> float:
        prior = log_noise_prior(first, default_noise_sd, math.exp(log_spread))
        return -grid_log_evidence(stacked, first.log_keep_prior, prior)

    low, high = (math.log(b) for b in SPREAD_BOUNDS)
    result = minimize_scalar(negative, bounds=(low, high), method="bounded")
    return float(math.exp(result.x))


def grid_log_evidence(
    log_likelihood: Tensor, log_keep_prior: Tensor, log_sigma_prior: Tensor
) -> float:
    """`sum_r log sum_{keep, sigma} p(labels_r | keep, sigma) p(keep) p(sigma)` on the grid,
    from the raters' grids' log likelihoods stacked (R x G x S)."""
    joint = log_likelihood + (log_keep_prior[:, None] + log_sigma_prior[None, :])
    return float(torch.logsumexp(joint.reshape(joint.shape[0], -1), 1).sum())


def fit_keep_prior(
    grids: Sequence[RaterGrid],
    keep_prior: tuple[float, float],
    random_share: float,
    *,
    default_noise_sd: float,
    spread: float,
) -> tuple[float, float]:
    """Empirical Bayes for the keep prior (MATH.md §3, lapse paragraph): the Beta(alpha, beta)
    with `beta` kept that maximises `sum_r log sum_{keep, sigma} p(labels_r | keep, sigma)
    p(keep) p(sigma)`, the share of pure random clickers kept too. A prior that expects
    lapses the raters do not make down-weights every label a new rater gives and widens the
    intervals; one that expects none lets a lapsing population's labels pull too hard. One
    bounded scalar search over log alpha in KEEP_ALPHA_BOUNDS; the rater grids' likelihoods
    do not depend on the prior, so no label is scored again.

    Raises:
        ValueError: no rater grid, or grids without a keep axis.
    """
    if not grids or any(g.keep.numel() < 2 for g in grids):
        raise ValueError("fitting the keep prior needs raters with the lapse model")
    keep_grid, beta = grids[0].keep, keep_prior[1]
    log_sigma_prior = log_noise_prior(grids[0], default_noise_sd, spread)
    stacked = torch.stack([grid.log_likelihood for grid in grids])  # once for every evaluation

    def negative(log_alpha: float) -> float:
        prior = log_keep_prior_on(keep_grid, (math.exp(log_alpha), beta), random_share)
        return -grid_log_evidence(stacked, prior, log_sigma_prior)

    low, high = (math.log(b) for b in KEEP_ALPHA_BOUNDS)
    result = minimize_scalar(negative, bounds=(low, high), method="bounded")
    return float(math.exp(result.x)), beta


def with_keep_prior(
    grids: Sequence[RaterGrid], keep_prior: tuple[float, float], random_share: float
) -> list[RaterGrid]:
    """The grids under another keep prior (their likelihoods shared)."""
    if not grids:
        return []
    prior = log_keep_prior_on(grids[0].keep, keep_prior, random_share)
    return [replace(grid, log_keep_prior=prior) for grid in grids]


__all__ = [
    "FLAG_PROBABILITY",
    "KEEP_ALPHA_BOUNDS",
    "KEEP_PRIOR",
    "NOISE_PRIOR_LOG_SD",
    "RaterGrid",
    "RaterReliability",
    "fit_keep_prior",
    "fit_noise_spread",
    "grid_log_evidence",
    "log_keep_prior_on",
    "log_noise_prior",
    "rater_grid",
    "rater_grids",
    "rater_posterior",
    "rater_posteriors",
    "with_keep_prior",
]
