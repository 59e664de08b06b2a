"""The stopping rule: targets, Campaign.progress(), CampaignDone until a target is raised or
clips are added, and replay keeping the targets."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine import (
    Campaign,
    CampaignConfig,
    CampaignDone,
    NoEligibleTaskError,
    Targets,
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
