"""The stopping rule: targets, Campaign.progress(), CampaignDone until a target is raised or
clips are added, and replay keeping the targets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine import (
    Campaign,
    CampaignConfig,
    CampaignDone,
    NoEligibleTaskError,
    Targets,
    tau_quantile,
)

SEED = 0
N_ITEMS = 6
LABELS = 40


def _labelled(targets: Targets) -> Campaign:
    """Six clips without criteria, `LABELS` noisy answers from a fixed truth (the engine's own
    choices, so the answers are about the pairs it asked)."""
    campaign = Campaign(CampaignConfig(criteria=(), noise_sd=0.5), device="cpu")
    campaign.add_clips(count=N_ITEMS)
    truth = np.linspace(-1.5, 1.5, N_ITEMS)
    rng = np.random.default_rng(SEED)
    for _ in range(LABELS):
        task = campaign.next_pairs(repeat_pairs=True)[0]
        better = truth[task.first] - truth[task.second] + 0.5 * rng.standard_normal() > 0
        campaign.observe_pair(task.first, task.second, "win" if better else "loss", task_id=task.id)
    campaign.set_targets(targets)
    return campaign


def test_targets_are_validated() -> None:
    with pytest.raises(ValueError, match="Kendall tau"):
        Targets(kendall_tau=1.5)
    with pytest.raises(ValueError, match="interval width"):
        Targets(interval_width=0.0)


def test_no_target_never_done() -> None:
    campaign = _labelled(Targets())
    status = campaign.progress()
    assert status.targets == () and not status.done
    assert "no target" in status.reason
    campaign.next_pairs()  # hands out as before


def test_tau_target_met_stops_every_request_until_raised() -> None:
    campaign = _labelled(Targets(kendall_tau=0.5))
    status = campaign.progress()
    (tau,) = status.targets
    assert tau.name == "expected_kendall_tau"
    assert math.isclose(tau.value, campaign.expected_kendall_tau())
    assert tau.value >= 0.5 and tau.met and tau.distance == 0.0 and status.done
    with pytest.raises(CampaignDone, match="expected_kendall_tau") as raised:
        campaign.next_pairs()
    assert raised.value.progress.done
    assert isinstance(raised.value, NoEligibleTaskError)  # callers that stop on "nothing left"
    with pytest.raises(CampaignDone):
        campaign.next_tasks()
    # raising the target past the current value reopens it, with the distance to go
    campaign.set_targets(Targets(kendall_tau=1.0))
    (tau,) = campaign.progress().targets
    assert not tau.met and math.isclose(tau.distance, 1.0 - tau.value)
    assert campaign.next_pairs()


def test_unmet_target_hands_out_tasks() -> None:
    campaign = Campaign(CampaignConfig(criteria=(), targets=Targets(kendall_tau=0.9)), device="cpu")
    campaign.add_clips(count=4)
    status = campaign.progress()
    assert not status.done and status.targets[0].value == 0.0  # the prior orders nothing
    assert "not done after 0 labels" in status.reason
    assert campaign.next_pairs()


def test_adding_clips_reopens_a_done_campaign() -> None:
    campaign = _labelled(Targets(kendall_tau=0.8))
    assert campaign.progress().done
    campaign.add_clips(count=N_ITEMS)  # six clips nobody has compared
    status = campaign.progress()
    assert not status.done and status.targets[0].value < 0.8
    assert campaign.next_pairs()


def test_interval_width_target() -> None:
    campaign = _labelled(Targets(interval_width=100.0))
    board = campaign.leaderboard(0.9)
    widest = float((board.upper - board.lower).max())
    (width,) = campaign.progress().targets
    assert width.name == "interval_width" and math.isclose(width.value, widest) and width.met
    with pytest.raises(CampaignDone):
        campaign.next_pairs()
    campaign.set_targets(Targets(interval_width=widest / 2))
    (width,) = campaign.progress().targets
    assert not width.met and math.isclose(width.distance, widest / 2)
    assert campaign.next_pairs()


def test_both_targets_must_be_met() -> None:
    campaign = _labelled(Targets(kendall_tau=0.5, interval_width=1e-3))
    status = campaign.progress()
    assert [t.met for t in status.targets] == [True, False] and not status.done
    assert campaign.next_pairs()


def test_replay_keeps_the_targets_and_the_verdict() -> None:
    campaign = _labelled(Targets(kendall_tau=0.5))
    fresh = campaign.replay()
    assert fresh.config.targets == campaign.config.targets
    assert fresh.progress() == campaign.progress()
    with pytest.raises(CampaignDone):
        fresh.next_pairs()


# the quantile target: P(tau >= t) >= confidence under the posterior ---------------------------

N_DRAWS = 4000  # draws for the engine's own estimates in these tests
ORACLE_DRAWS = 200_000  # numpy draws of the brute-force oracle


def _grouped(structure: str) -> Campaign:
    """Nine clips with two criteria in three prompts, labelled by the engine's choices."""
    config = CampaignConfig(
        criteria=("alignment", "fineness"), pair_scope="group", structure=structure
    )
    campaign = Campaign(config, device="cpu")
    rng = np.random.default_rng(SEED)
    scores = rng.normal(size=(9, 2)).tolist()
    groups = [f"p{k % 3}" for k in range(9)]
    campaign.add_clips(scores, groups=groups, contexts=["c"] * 9)
    truth = rng.normal(size=9)
    for _ in range(25):
        task = campaign.next_pairs(repeat_pairs=True)[0]
        better = truth[task.first] - truth[task.second] + rng.standard_normal() > 0
        campaign.observe_pair(task.first, task.second, "win" if better else "loss", task_id=task.id)
    return campaign


def _oracle_taus(campaign: Campaign, groups: np.ndarray | None) -> np.ndarray:
    """Brute force with numpy: draws from the dense posterior's clip marginal, Kendall tau of
    each against the posterior mean order, pair by pair in Python."""
    posterior = campaign.posterior
    mean = posterior.item_mean.numpy()
    cov = posterior.item_cov.numpy()
    draws = np.random.default_rng(SEED + 1).multivariate_normal(mean, cov, size=ORACLE_DRAWS)
    n = mean.size
    pairs = [
        (i, j)
        for i in range(n)
        for j in range(i + 1, n)
        if groups is None or groups[i] == groups[j]
    ]
    total = np.zeros(ORACLE_DRAWS)
    for i, j in pairs:
        total += np.sign(mean[i] - mean[j]) * np.sign(draws[:, i] - draws[:, j])
    return total / len(pairs)


def test_confidence_is_validated() -> None:
    with pytest.raises(ValueError, match="confidence"):
        Targets(kendall_tau=0.8, confidence=1.0)
    with pytest.raises(ValueError, match="confidence"):
        Targets(kendall_tau=0.8, confidence=0.0)
    with pytest.raises(ValueError, match="needs a Kendall tau"):
        Targets(confidence=0.9)


def test_tau_quantile_is_the_share_of_draws_turned_round() -> None:
    # tau_quantile(d, c) >= t exactly when a share >= c of the draws reach t
    rng = np.random.default_rng(SEED)
    for _ in range(200):
        draws = torch.from_numpy(rng.integers(-3, 4, size=int(rng.integers(1, 30))) / 3.0)
        confidence = float(rng.uniform(0.01, 0.99))
        for target in np.arange(-1.0, 1.01, 1 / 3):
            share = float((draws >= target - 1e-12).double().mean())
            assert (tau_quantile(draws, confidence) >= target - 1e-12) == (share >= confidence)
    assert tau_quantile(torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5]), 0.8) == 0.2


@pytest.mark.parametrize("structure", ["dense", "blocks"])
def test_sampled_tau_averages_to_the_expected_tau(structure: str) -> None:
    # closed form: E[sign(m_i - m_j) sign(f_i - f_j)] = |2 P(f_i > f_j) - 1|
    campaign = _grouped(structure)
    draws = campaign.kendall_tau_draws(N_DRAWS, torch.Generator().manual_seed(SEED))
    assert draws.shape == (N_DRAWS,)
    error = float(draws.std()) / math.sqrt(N_DRAWS)
    assert abs(float(draws.mean()) - campaign.expected_kendall_tau()) < 4 * error


@pytest.mark.parametrize("structure", ["dense", "blocks"])
def test_quantile_matches_brute_force_monte_carlo(structure: str) -> None:
    campaign = _grouped(structure)
    oracle = _oracle_taus(campaign, campaign.groups.numpy())
    engine = campaign.kendall_tau_draws(N_DRAWS, torch.Generator().manual_seed(SEED)).numpy()
    for target in (0.2, 0.5, 0.8):
        share, reference = (engine >= target).mean(), (oracle >= target).mean()
        assert abs(share - reference) < 4 * math.sqrt(reference * (1 - reference) / N_DRAWS) + 1e-3
    # the campaign's verdict is the oracle's wherever the oracle is clear of the confidence
    for target in np.arange(0.05, 1.0, 0.1):
        reference = float((oracle >= target).mean())
        if abs(reference - 0.9) < 0.03:
            continue
        campaign.set_targets(Targets(kendall_tau=float(target), confidence=0.9))
        (status,) = campaign.progress().targets
        assert status.name == "kendall_tau_quantile"
        assert status.met == (reference >= 0.9)


def test_quantile_target_is_stricter_than_the_expected_tau() -> None:
    campaign = _labelled(Targets())
    expected = campaign.expected_kendall_tau()
    campaign.set_targets(Targets(kendall_tau=expected - 1e-6))
    assert campaign.progress().done
    campaign.set_targets(Targets(kendall_tau=expected - 1e-6, confidence=0.9))
    (status,) = campaign.progress().targets
    assert not status.met and status.value < expected and status.distance > 0
    assert campaign.next_pairs()
    # a low enough target is met with 90 % posterior probability, and stops the campaign
    campaign.set_targets(Targets(kendall_tau=status.value, confidence=0.9))
    assert campaign.progress().done
    with pytest.raises(CampaignDone, match="kendall_tau_quantile"):
        campaign.next_pairs()


def test_replay_keeps_the_quantile_verdict() -> None:
    campaign = _labelled(Targets(kendall_tau=0.3, confidence=0.9))
    fresh = campaign.replay()
    assert fresh.config.targets == campaign.config.targets
    assert fresh.progress() == campaign.progress()
