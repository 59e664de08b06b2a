"""Independent references for the simulator's maths, built from the definitions only.

Nothing here imports `sim`: the Thurstone MAP objective is written over individual comparisons
with `scipy.stats.norm.logcdf` and minimised with derivative-free-gradient BFGS.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.stats import norm

JOD_SIGMA = 1.4826  # Thurstone sigma on the JOD scale (1 JOD = 75 % preference)
PRIOR_SD = 3.0


def negative_log_posterior(
    q: np.ndarray,
    first: np.ndarray,
    second: np.ndarray,
    sign: np.ndarray,
    *,
    noise_sd: float = JOD_SIGMA,
    prior_sd: float = PRIOR_SD,
) -> float:
    """`-sum_c log P(answer_c | q) + |q|^2 / (2 prior_sd^2)`, one term per comparison.

    A win of `first` contributes `log Phi((q_first - q_second) / sigma)`, a loss the mirror
    image and a tie half of each (a tie is half a win each way).

    Args:
        q: (n,) qualities.
        first, second: (m,) item indices.
        sign: (m,) +1 first won, 0 tie, -1 second won.
    """
    x = (q[first] - q[second]) / noise_sd
    win = norm.logcdf(x)
    loss = norm.logcdf(-x)
    log_lik = np.where(sign > 0, win, np.where(sign < 0, loss, 0.5 * (win + loss)))
    return float(-np.sum(log_lik) + 0.5 * np.sum(q * q) / prior_sd**2)


def reference_map(
    n: int, first: np.ndarray, second: np.ndarray, sign: np.ndarray, **kwargs: float
) -> np.ndarray:
    """The MAP by BFGS with finite-difference gradients (no analytic gradient).

    BFGS usually stops on "precision loss" near the optimum (forward differences are only
    accurate to ~1e-5 here); the gradient check below is what matters.
    """
    result = minimize(
        lambda q: negative_log_posterior(q, first, second, sign, **kwargs),
        np.zeros(n),
        method="BFGS",
        options={"gtol": 1e-7, "maxiter": 10_000},
    )
    assert np.max(np.abs(result.jac)) < 1e-3, result.message
    return result.x


def numerical_hessian(
    q: np.ndarray,
    first: np.ndarray,
    second: np.ndarray,
    sign: np.ndarray,
    step: float = 1e-4,
) -> np.ndarray:
    """Central second differences of `negative_log_posterior` at q."""
    n = q.size

    def f(v: np.ndarray) -> float:
        return negative_log_posterior(v, first, second, sign)

    eye = np.eye(n) * step
    hessian = np.empty((n, n))
    for i in range(n):
        for j in range(i, n):
            value = (
                f(q + eye[i] + eye[j])
                - f(q + eye[i] - eye[j])
                - f(q - eye[i] + eye[j])
                + f(q - eye[i] - eye[j])
            ) / (4 * step**2)
            hessian[i, j] = hessian[j, i] = value
    return hessian
