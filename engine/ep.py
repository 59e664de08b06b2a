"""Expectation propagation over interval events: ADF with every site kept and revisited.

One ADF pass (engine.update) leaves a posterior that depends on the order labels arrived in,
and under a wide prior the first labels move it too far (MATH.md §2, last paragraph of the
numerics). EP keeps each event's Gaussian site on its projection `z_k = a_k . theta`,

    site_k(z) ∝ exp(-tau_k z^2 / 2 + nu_k z),

and sweeps: remove a site (the cavity), moment-match the tilted distribution cavity x
likelihood with the same interval moments as ADF (`engine.likelihoods`), put the new site back
as a rank-1 change of the posterior. The first sweep from zero sites IS the ADF pass; at a
fixed point the posterior no longer depends on the order. Minka (2001); Rasmussen and
Williams (2006), §3.6, for the site algebra.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

from engine.likelihoods import LIKELIHOODS
from engine.state import Posterior
from engine.update import (
    MIN_CAVITY_PRECISION,
    BorderPart,
    Events,
    Sites,
    along,
    event_items,
    event_moments,
    theta_part,
)

if TYPE_CHECKING:
    from engine.structured import GroupedPosterior

TOLERANCE = 1e-8  # largest change of a site's natural parameters that counts as converged


@dataclass(frozen=True)
class Refinement:
    """EP's result: the posterior (dense, or in blocks from `engine.structured`), its sites,
    sweeps run and the last largest site change."""

    posterior: Posterior | GroupedPosterior
    sites: Sites
    sweeps: int
    change: float


class SiteTarget(Protocol):
    """A Gaussian that EP moves by rank-1 steps along event directions a = e_i - e_j (or e_i
    when j = -1) plus a border part: the dense posterior here,
    `engine.structured.GroupedPosterior` in block form."""

    @property
    def n_weights(self) -> int:
        """The border's size: what an event's border part may index."""
        ...

    def marginal(
        self, i: int, j: int, border: BorderPart | None = None, sign: float = -1.0
    ) -> tuple[float, float]:
        """`(a.m, a.S.a)` of the event direction (`sign` the second clip's coefficient)."""
        ...

    def rank_one(
        self,
        i: int,
        j: int,
        alpha: float,
        beta: float,
        border: BorderPart | None = None,
        sign: float = -1.0,
    ) -> None:
        """`m += alpha S a`, `S += beta (S a)(S a)'` for the direction last passed to marginal."""
        ...


class _DenseTarget:
    """The dense posterior as a SiteTarget: S a is a sum of a few columns of S."""

    def __init__(self, posterior: Posterior) -> None:
        self.mean, self.cov = posterior.mean.clone(), posterior.cov.clone()
        self.n_items = posterior.n_items
        self._column = self.mean

    @property
    def n_weights(self) -> int:
        return self.mean.shape[0] - self.n_items

    def marginal(
        self, i: int, j: int, border: BorderPart | None = None, sign: float = -1.0
    ) -> tuple[float, float]:
        part = theta_part(border, self.n_items, self.mean)
        column = along(self.cov.T, i, j, part, sign)
        self._column = column
        return float(along(self.mean, i, j, part, sign)), float(along(column, i, j, part, sign))

    def rank_one(
        self,
        i: int,
        j: int,
        alpha: float,
        beta: float,
        border: BorderPart | None = None,
        sign: float = -1.0,
    ) -> None:
        self.mean.add_(self._column, alpha=alpha)
        self.cov.addr_(self._column, self._column, alpha=beta)


def ep_refine(
    prior: Posterior,
    events: Events,
    *,
    max_sweeps: int = 50,
    damping: float = 1.0,
    tolerance: float = TOLERANCE,
    likelihood: str = "interval",
) -> Refinement:
    """The EP posterior of `prior` x the events' likelihoods, from zero sites.

    Args:
        prior: the Gaussian prior (no labels applied).
        events: every event, in any order.
        max_sweeps: sweeps allowed; the first is the ADF pass.
        damping: in (0, 1]; the share of each new site taken after the first sweep.
        tolerance: converged when no site's tau or nu moves more than this in a sweep.
        likelihood: a key of LIKELIHOODS.

    Raises:
        ValueError: bad damping or sweep count.
        RuntimeError: not converged within `max_sweeps`.
    """
    event_items(events, prior.n_items)
    target = _DenseTarget(prior)
    sites, sweeps, change = ep_sweeps(
        target,
        events,
        max_sweeps=max_sweeps,
        damping=damping,
        tolerance=tolerance,
        likelihood=likelihood,
    )
    posterior = replace(prior, mean=target.mean, cov=target.cov)
    return Refinement(posterior, sites, sweeps, change)


def ep_sweeps(
    target: SiteTarget,
    events: Events,
    *,
    max_sweeps: int = 50,
    damping: float = 1.0,
    tolerance: float = TOLERANCE,
    likelihood: str = "interval",
) -> tuple[Sites, int, float]:
    """EP sweeps over `events` on `target` (the prior, changed in place into the EP posterior).

    Returns:
        The sites, the sweeps run and the last largest site change.

    Raises:
        ValueError: bad damping or sweep count.
        RuntimeError: not converged within `max_sweeps`.
    """
    if not 0 < damping <= 1:
        raise ValueError(f"damping must be in (0, 1], got {damping}")
    if max_sweeps < 1:
        raise ValueError("max_sweeps must be >= 1")
    moment_function = LIKELIHOODS[likelihood]
    first, second = events.first.tolist(), events.second.tolist()
    borders = events.border_parts(target.n_weights)
    signs = events.signs()
    count = len(events)
    like = events.lo
    tau = like.new_zeros(count)
    nu = like.new_zeros(count)
    change = math.inf
    for sweep in range(max_sweeps):
        step = 1.0 if sweep == 0 else damping
        change = 0.0
        for b, (i, j) in enumerate(zip(first, second, strict=True)):
            m, s = target.marginal(i, j, borders[b], signs[b])
            old_tau, old_nu = float(tau[b]), float(nu[b])
            cavity_precision = 1.0 / max(s, 1e-300) - old_tau
            if cavity_precision <= MIN_CAVITY_PRECISION:
                continue
            cavity_var = 1.0 / cavity_precision
            cavity_mean = cavity_var * (m / s - old_nu)
            moments, _ = event_moments(
                moment_function,
                events,
                b,
                like.new_tensor(cavity_mean),
                like.new_tensor(cavity_var),
            )
            dlog_z, d2log_z = float(moments.dlog_z), float(moments.d2log_z)
            new_mean = cavity_mean + cavity_var * dlog_z
            new_var = cavity_var + cavity_var**2 * d2log_z
            if not (math.isfinite(new_mean) and new_var > 0):
                raise FloatingPointError(f"event {b} produced a degenerate EP update")
            new_tau = step * (1.0 / new_var - cavity_precision) + (1 - step) * old_tau
            new_nu = step * (new_mean / new_var - cavity_mean / cavity_var) + (1 - step) * old_nu
            delta_tau, delta_nu = new_tau - old_tau, new_nu - old_nu
            denominator = 1.0 + delta_tau * s
            # precision += delta_tau a a', shift += delta_nu a: a rank-1 change of (m, S)
            target.rank_one(
                i,
                j,
                (delta_nu - delta_tau * m) / denominator,
                -delta_tau / denominator,
                borders[b],
                signs[b],
            )
            tau[b], nu[b] = new_tau, new_nu
            change = max(change, abs(delta_tau), abs(delta_nu))
        if sweep > 0 and change <= tolerance:
            return Sites(tau, nu), sweep + 1, change
    raise RuntimeError(
        f"EP did not converge in {max_sweeps} sweeps (largest site change {change:.3g}); "
        "try damping < 1"
    )


__all__ = ["Refinement", "SiteTarget", "Sites", "ep_refine", "ep_sweeps"]
