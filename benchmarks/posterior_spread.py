"""Does the posterior mean over-spread under a wide prior, and is ADF or the prior to blame?

For two synthetic worlds (n = 100, reward model corr 0.7, true quality sd ~1.5 JOD) and prior
residual sd 1.5 and 3, feed 200 random forced-choice labels and compare the clip means of one
ADF pass, of EP (`Campaign.refine`) and of the exact MAP of the same model (L-BFGS on the
Gaussian prior times the probit likelihood): RMSE against the truth, Kendall tau, spread (sd).
Writes benchmarks/results/posterior_spread.{json,md}.

    python -m benchmarks.posterior_spread
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import minimize
from scipy.special import log_ndtr

from engine import Judgment, Outcome, PriorScales
from engine.adapters import JOD_NOISE_SD
from sim import campaigns, metrics
from sim.report import provenance
from sim.worlds import SyntheticSpec, SyntheticWorld

RESULTS = Path(__file__).resolve().parent / "results"
LABELS = 200


def _map(mean0: np.ndarray, cov0: np.ndarray, first, second, sign) -> np.ndarray:
    precision = np.linalg.inv(cov0)

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        d = theta - mean0
        x = sign * (theta[first] - theta[second]) / JOD_NOISE_SD
        log_phi = log_ndtr(x)
        ratio = np.exp(-0.5 * x * x - 0.5 * np.log(2 * np.pi) - log_phi)
        grad = precision @ d
        step = -ratio * sign / JOD_NOISE_SD
        np.add.at(grad, first, step)
        np.add.at(grad, second, -step)
        return 0.5 * d @ precision @ d - log_phi.sum(), grad

    options = {"maxiter": 5000, "gtol": 1e-9}
    return minimize(objective, mean0, jac=True, method="L-BFGS-B", options=options).x


def main(seed: int = 0) -> list[dict[str, object]]:
    torch.set_num_threads(1)
    rows = []
    for residual in (1.5, 3.0):
        for world_seed in (seed, seed + 1):
            prior = PriorScales(weight_scale=1.0, context_scale=0.5, residual_scale=residual)
            world = SyntheticWorld(SyntheticSpec(n_items=100, rm_correlation=0.7), world_seed)
            campaign = campaigns.build_campaign(world.problem, reward_model=True, prior=prior)
            mean0 = campaign.posterior.mean.numpy().copy()
            cov0 = campaign.posterior.cov.numpy().copy()
            rng = np.random.default_rng(world_seed)
            picks = world.problem.candidates[
                rng.integers(len(world.problem.candidates), size=LABELS)
            ]
            signs = []
            for i, j in picks:
                outcome, _ = world.answer_pair(int(i), int(j), 0, rng)
                campaign.observe([Judgment.pair(None, int(i), int(j), outcome)])
                signs.append(1.0 if outcome is Outcome.WIN else -1.0)
            n = world.problem.n_items
            estimates = {"adf": campaign.posterior.mean.numpy()[:n].copy()}
            estimates["map"] = _map(mean0, cov0, picks[:, 0], picks[:, 1], np.array(signs))[:n]
            campaign.refine()
            estimates["ep"] = campaign.posterior.mean.numpy()[:n]
            for name, mean in estimates.items():
                rows.append(
                    {
                        "prior_residual_sd": residual,
                        "world_seed": world_seed,
                        "estimate": name,
                        "rmse": metrics.rmse(mean, world.quality, None),
                        "kendall_tau": metrics.kendall_tau(mean, world.quality, None),
                        "sd": float(mean.std()),
                        "truth_sd": float(world.quality.std()),
                    }
                )
    RESULTS.mkdir(parents=True, exist_ok=True)
    document = {"provenance": provenance(seed), "labels": LABELS, "rows": rows}
    (RESULTS / "posterior_spread.json").write_text(json.dumps(document, indent=1) + "\n")
    lines = [
        "# Posterior spread after 200 random labels (ADF vs EP vs exact MAP)",
        "",
        "Command: `python -m benchmarks.posterior_spread`",
        "",
        "| prior residual sd | world | estimate | RMSE | Kendall tau | sd | truth sd |",
        "|---:|---:|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['prior_residual_sd']} | {r['world_seed']} | {r['estimate']} | {r['rmse']:.3f} | "
        f"{r['kendall_tau']:.3f} | {r['sd']:.2f} | {r['truth_sd']:.2f} |"
        for r in rows
    ]
    (RESULTS / "posterior_spread.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return rows


if __name__ == "__main__":
    main()
