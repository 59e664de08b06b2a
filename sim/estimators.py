"""The fixed estimator every strategy's labels are scored with: a MAP Thurstone fit.

This is the classic set-up of a pairwise-comparison study (pwcmp, Perez-Ortiz and Mantiuk
2017): Thurstone case V on the JOD scale, `P(i beats j) = Phi((q_i - q_j) / sigma)` with
sigma = 1.4826, a tie counted as half a win each way, a weak Gaussian prior N(0, prior_sd^2)
that keeps unbeaten clips finite, fitted by L-BFGS; the Laplace approximation (inverse Hessian
at the mode) gives its credible intervals. It ignores the reward model on purpose, so that what
a strategy's choice of pairs buys can be told apart from what the engine's prior buys.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_ndtr

from engine import Outcome
from engine.adapters import JOD_NOISE_SD

CLASSIC_PRIOR_SD = 3.0  # JOD; weak: a clip's quality rarely spans more than +-6 JOD
GRADIENT_TOLERANCE = 1e-8


@dataclass(frozen=True)
class ThurstoneFit:
    """MAP qualities (n,) in JOD and their Laplace covariance (n, n)."""

    mean: np.ndarray
    cov: np.ndarray


def win_counts(
    n_items: int, first: np.ndarray, second: np.ndarray, outcome: np.ndarray
) -> np.ndarray:
    """(n, n) counts C[i, j] = times i beat j; a tie adds 0.5 both ways.

    Args:
        first, second: (m,) clip indices of each comparison.
        outcome: (m,) +1 = first won, 0 = tie, -1 = second won.
    """
    counts = np.zeros((n_items, n_items))
    np.add.at(counts, (first, second), (outcome + 1) / 2)
    np.add.at(counts, (second, first), (1 - outcome) / 2)
    return counts


def outcome_signs(outcomes: list[Outcome]) -> np.ndarray:
    """+1 / 0 / -1 for win / tie / loss."""
    sign = {Outcome.WIN: 1.0, Outcome.TIE: 0.0, Outcome.LOSS: -1.0}
    return np.array([sign[o] for o in outcomes], dtype=float)


def fit_thurstone(
    counts: np.ndarray,
    *,
    noise_sd: float = JOD_NOISE_SD,
    prior_sd: float = CLASSIC_PRIOR_SD,
    start: np.ndarray | None = None,
    with_cov: bool = True,
) -> ThurstoneFit:
    """`argmax_q sum_ij C_ij log Phi((q_i - q_j)/sigma) - |q|^2 / (2 prior_sd^2)`.

    Args:
        counts: (n, n) win counts from `win_counts`.
        noise_sd: Thurstone sigma (JOD scale by default).
        prior_sd: sd of the weak zero-mean Gaussian prior on each quality.
        start: warm start (n,), e.g. the previous checkpoint's fit.
        with_cov: also compute the Laplace covariance (an n x n inverse).

    Raises:
        RuntimeError: when L-BFGS does not converge.
    """
    n = counts.shape[0]
    rows, cols = np.nonzero(counts)
    weight = counts[rows, cols]

    def objective(q: np.ndarray) -> tuple[float, np.ndarray]:
        x = (q[rows] - q[cols]) / noise_sd
        log_phi = log_ndtr(x)
        # d/dx log Phi(x) = phi(x) / Phi(x), formed in log space so far tails stay finite
        ratio = np.exp(-0.5 * x * x - 0.5 * np.log(2 * np.pi) - log_phi)
        value = -np.sum(weight * log_phi) + 0.5 * np.sum(q * q) / prior_sd**2
        grad_pair = -weight * ratio / noise_sd
        grad = q / prior_sd**2
        grad += np.bincount(rows, grad_pair, minlength=n) - np.bincount(
            cols, grad_pair, minlength=n
        )
        return float(value), grad

    q0 = np.zeros(n) if start is None else np.asarray(start, dtype=float)
    # ftol 0: stop on the gradient (or when f stops decreasing), not on L-BFGS-B's default
    # relative-reduction test, which stops ~1e-4 JOD short and makes the fit depend on `start`
    result = minimize(
        objective,
        q0,
        jac=True,
        method="L-BFGS-B",
        options={"gtol": GRADIENT_TOLERANCE, "ftol": 0.0},
    )
    if not result.success and np.max(np.abs(result.jac)) > 1e-4:
        raise RuntimeError(f"the Thurstone fit did not converge: {result.message}")
    mean = result.x
    cov = np.empty((0, 0))
    if with_cov:
        x = (mean[rows] - mean[cols]) / noise_sd
        ratio = np.exp(-0.5 * x * x - 0.5 * np.log(2 * np.pi) - log_ndtr(x))
        # -d2/dx2 log Phi(x) = ratio * (x + ratio) >= 0
        curvature = weight * ratio * (x + ratio) / noise_sd**2
        hessian = np.eye(n) / prior_sd**2
        np.add.at(hessian, (rows, rows), curvature)
        np.add.at(hessian, (cols, cols), curvature)
        np.add.at(hessian, (rows, cols), -curvature)
        np.add.at(hessian, (cols, rows), -curvature)
        cov = np.linalg.inv(hessian)
    return ThurstoneFit(mean, cov)


__all__ = ["CLASSIC_PRIOR_SD", "ThurstoneFit", "fit_thurstone", "outcome_signs", "win_counts"]
