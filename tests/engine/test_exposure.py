"""The exposure rule (engine.exposure, CampaignConfig.min_labels): a clip below its minimum
count of labels, answered plus pending, is in the next pair, in every posterior form.

The worlds: 12 clips in 3 prompts of 4 with one criterion, labelled; then a clip (or two) the
gain passes over is added, and the choices with the rule off (min_labels=0) are the reference
that shows the rule binds.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from engine import Campaign, CampaignConfig, Judgment, Outcome
from engine.exposure import ClipCounts, Exposure
from engine.questions import Pair

SEED = 0
N_CLIPS = 12


def labelled(min_labels: int, *, scope: str = "any", structure: str = "dense", **changes):
    """A campaign of 12 clips (3 prompts of 4) with 120 labels (any scope) or 60 (within
    prompts) from a seeded noisy rater."""
    config = CampaignConfig(
        criteria=("a",),
        pair_scope=scope,  # type: ignore[arg-type]
        structure=structure,  # type: ignore[arg-type]
        min_labels=min_labels,
        **changes,
    )
    campaign = Campaign(config, device="cpu", dtype=torch.float64)
    generator = torch.Generator().manual_seed(SEED)
    campaign.add_clips(
        torch.linspace(-1, 1, N_CLIPS)[:, None], groups=[k // 4 for k in range(N_CLIPS)]
    )
    quality = 2 * torch.linspace(-1, 1, N_CLIPS)
    labels = []
    for step in range(120 if scope == "any" else 60):
        if scope == "any":
            first, second = torch.randperm(N_CLIPS, generator=generator)[:2].tolist()
        else:
            first = int(torch.randint(N_CLIPS, (1,), generator=generator))
            second = (first // 4) * 4 + (first + 1 + step % 3) % 4
        noise = float(torch.randn(1, generator=generator))
        outcome = "win" if quality[first] + noise > quality[second] else "loss"
        labels.append(Judgment.pair("r", first, second, outcome))
    campaign.observe(labels)
    return campaign


def far_clip(min_labels: int, **kw) -> Campaign:
    """The labelled campaign plus clip 12, scored far above every other (its pairs look
    certain, so the gain passes over it in any scope)."""
    campaign = labelled(min_labels, **kw)
    campaign.add_clips(torch.tensor([[6.0]]), groups=[0])
    return campaign


def pairs(tasks) -> list[tuple[int, int]]:
    return [(t.first, t.second) for t in tasks]


@pytest.mark.parametrize("structure", ["dense", "factorised"])
def test_a_starved_clip_the_gain_passes_over_is_in_the_next_pair(structure: str) -> None:
    """Off, no pair of the first three holds clip 12; on (minimum 2), the first two do (two
    raters asking in turn: the first task is pending), and the third is the gain's own."""
    off = far_clip(0, structure=structure)
    on = far_clip(2, structure=structure)
    chosen_off = [off.next_pairs(f"rater{k}")[0] for k in range(3)]
    chosen_on = [on.next_pairs(f"rater{k}")[0] for k in range(3)]
    assert all(12 not in (t.first, t.second) for t in chosen_off)
    assert all(12 in (t.first, t.second) for t in chosen_on[:2])
    assert 12 not in (chosen_on[2].first, chosen_on[2].second)
    # past the owed labels the rule steps aside: the gain's pick, as with the rule off
    assert pairs(chosen_on[2:]) == pairs(chosen_off[:1])
    # the partner is the objective's choice among the clip's pairs
    assert chosen_on[0].gain > 0


def test_pending_tasks_count_toward_the_minimum() -> None:
    """With a minimum of 1 the first task pays the clip's due; a second rater then gets the
    gain's pick. Releasing the first task makes the clip owed again."""
    campaign = far_clip(1)
    first = campaign.next_pairs("a")[0]
    second = campaign.next_pairs("b")[0]
    assert 12 in (first.first, first.second)
    assert 12 not in (second.first, second.second)
    campaign.release(first.id)
    again = campaign.next_pairs("c")[0]
    assert 12 in (again.first, again.second)


def test_an_answered_label_counts_and_a_gold_answer_does_not() -> None:
    campaign = far_clip(1, lapse_prior=(9.0, 1.0))
    assert campaign.label_counts()[12] == 0
    campaign.observe([Judgment(None, Pair(12, 3), Outcome.WIN, gold=Outcome.WIN)])
    assert campaign.label_counts()[12] == 0
    task = campaign.next_pairs("a")[0]
    assert 12 in (task.first, task.second)
    campaign.observe([Judgment.pair("a", task.first, task.second, "win")], [task.id])
    assert campaign.label_counts()[12] == 1
    nxt = campaign.next_pairs("b")[0]
    assert 12 not in (nxt.first, nxt.second)


def test_a_pending_gold_task_does_not_count() -> None:
    """A gold answer teaches no clip: its task leaves the clip owed."""
    campaign = far_clip(1, lapse_prior=(9.0, 1.0), gold_rate=1.0)
    campaign.add_gold(12, 3, "win")
    gold = campaign.next_tasks("a")[0]
    assert gold.gold is not None and 12 in (gold.first, gold.second)
    task = campaign.next_pairs("b")[0]
    assert 12 in (task.first, task.second)


def test_an_excluded_clip_is_never_forced() -> None:
    """A withheld or retired clip reaches the engine as excluded: never shown, never owed;
    another owed clip still is."""
    off = far_clip(0)
    campaign = far_clip(2)
    barred = campaign.next_pairs("a", exclude=[12])[0]
    assert 12 not in (barred.first, barred.second)
    assert pairs([barred]) == pairs(off.next_pairs("a", exclude=[12]))
    campaign.add_clips(torch.tensor([[-6.0]]), groups=[1])
    task = campaign.next_pairs("b", exclude=[12])[0]
    assert 13 in (task.first, task.second) and 12 not in (task.first, task.second)


def test_a_batch_pays_the_owed_labels_first_then_follows_the_gain() -> None:
    """A batch of 6 with clip 12 owed 2 labels: 6 distinct pairs, exactly two holding clip 12
    (the rule counts the batch's own picks as pending), first."""
    campaign = far_clip(2)
    tasks = campaign.next_pairs("a", count=6)
    assert len(set(pairs(tasks))) == 6
    holding = [12 in pair for pair in pairs(tasks)]
    assert holding == [True, True, False, False, False, False]


def test_dense_and_blocks_force_the_same_pair() -> None:
    """Within prompts, a new prompt of two clips far apart: their pair is the only one of
    owed clips, so it is asked again (for another rater) where the gain moves on; the dense
    and the block form agree pick by pick."""
    chosen = {}
    for structure in ("dense", "blocks"):
        for minimum in (0, 2):
            campaign = labelled(minimum, scope="group", structure=structure)
            campaign.add_clips(torch.tensor([[-8.0], [8.0]]), groups=[7, 7])
            chosen[structure, minimum] = pairs(campaign.next_pairs(f"r{k}")[0] for k in range(3))
    assert chosen["dense", 2] == chosen["blocks", 2]
    assert chosen["dense", 0] == chosen["blocks", 0]
    assert chosen["dense", 2][:2] == [(12, 13), (12, 13)]
    assert chosen["dense", 0][1] != (12, 13)


def test_a_rating_is_of_an_owed_clip() -> None:
    """With an emoji scale, a rating while a clip is owed rates that clip."""
    campaign = far_clip(2, emoji_thresholds=(-1.0, 0.0, 1.0))
    assert campaign.next_rating("a").first == 12


def test_replay_gives_the_same_counts_and_choice() -> None:
    campaign = far_clip(2)
    task = campaign.next_pairs("a")[0]
    campaign.observe([Judgment.pair("a", task.first, task.second, "loss")], [task.id])
    fresh = campaign.replay()
    assert torch.equal(fresh.label_counts(), campaign.label_counts())
    assert pairs(fresh.next_pairs("b")) == pairs(campaign.next_pairs("b"))


def test_the_rule_is_off_at_zero_and_rejects_a_negative_minimum() -> None:
    with pytest.raises(ValueError, match="min_labels"):
        CampaignConfig(min_labels=-1)
    with pytest.raises(ValueError, match="min_labels"):
        CampaignConfig(min_labels=1.5)  # type: ignore[arg-type]
    campaign = far_clip(2)
    campaign.set_min_labels(0)
    assert 12 not in pairs(campaign.next_pairs("a"))[0]


def test_exposure_counts_pending_clips_and_steps_aside_when_all_are_owed() -> None:
    cpu = torch.device("cpu")
    counts = ClipCounts()
    counts.add([0, 1, 0, 2])
    assert counts.counts(5).tolist() == [2, 1, 1, 0, 0]
    starved = counts.starved(5, [3], [4], 2, cpu)  # clip 4 may not be shown
    assert starved is not None
    assert starved.focus.tolist() == [False, True, True, True, False]
    assert starved.deficit == 1 + 1 + 1
    assert counts.starved(5, [], [4], 0, cpu) is None
    # every allowed clip owed: every pair holds one already, nothing to restrict
    assert ClipCounts().starved(5, [], [4], 1, cpu) is None


def test_dense_and_blocks_agree_on_a_batch_with_owed_clips_in_several_prompts() -> None:
    """Owed clips in three prompts (one new prompt of two, one late clip in each of two old
    ones): every pair of a batch of 6 holds an owed clip, the same pairs in both forms; the
    new prompt's one pair is out after the first round, so the second round serves the
    others, and the next request asks it again for its clips' second labels."""
    batches = {}
    for structure in ("dense", "blocks"):
        campaign = labelled(2, scope="group", structure=structure)
        campaign.add_clips(torch.tensor([[-8.0], [8.0], [5.0], [-5.0]]), groups=[7, 7, 0, 1])
        batches[structure] = pairs(campaign.next_pairs("a", count=6))
        batches[structure] += pairs(campaign.next_pairs("b", count=2))
    assert batches["dense"] == batches["blocks"]
    owed = {12, 13, 14, 15}
    assert all(owed & set(pair) for pair in batches["dense"][:6])
    assert batches["dense"][6] == (12, 13)
    counts = {clip: sum(clip in pair for pair in batches["dense"][:7]) for clip in owed}
    assert all(count >= 2 for count in counts.values()), counts


def direct_exposure(
    counts: Tensor, pending_items: Tensor, allowed: Tensor, min_labels: int
) -> Exposure | None:
    """The exposure rule counted directly over every clip, the reference `ClipCounts.starved`
    keeps label by label: `count_i + pending_i < min_labels` among the `allowed` clips.

    None when the rule changes nothing: it is off (`min_labels` 0), no allowed clip is
    starved, or every allowed clip is (then every pair holds one already, as at the start of
    a campaign).

    Args:
        counts: (n,) long answered labels per clip (not gold).
        pending_items: (P,) long the clips of the pending tasks (not gold), one entry per clip
            per task: two raters asking at once do not both get the same starved clip.
        allowed: (n,) bool, False for clips this rater may not be shown.
        min_labels: the floor m.

    Returns:
        The focus mask and the deficit on `allowed`'s device, or None.
    """
    if min_labels <= 0 or counts.numel() == 0:
        return None
    total = counts.to(allowed.device).clone()
    if pending_items.numel():
        index = pending_items.to(allowed.device)
        total.index_add_(0, index, torch.ones_like(index))
    focus = (total < min_labels) & allowed
    starved = int(focus.sum())
    if starved == 0 or starved == int(allowed.sum()):
        return None
    deficit = int((min_labels - total[focus]).sum())
    return Exposure(focus, deficit, starved)


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.integers(0, 6),  # clips added before this step
            st.lists(st.integers(0, 40), max_size=8),  # labels (clip indices, taken mod n)
            st.lists(st.integers(0, 40), max_size=6),  # pending clips
            st.lists(st.integers(0, 40), max_size=4),  # excluded clips
        ),
        min_size=1,
        max_size=8,
    ),
    min_labels=st.integers(0, 3),
)
def test_kept_floor_equals_the_direct_count(steps, min_labels: int) -> None:
    """`ClipCounts.starved`, kept in step label by label and grown clip by clip, is the direct
    `exposure` of the counts at every step: the mask, the deficit, the count, and which
    groups (of 3 clips each) hold a starved clip."""
    counts = ClipCounts()
    n = 1
    for added, labels, pending, excluded in steps:
        n += added
        counts.add(i % n for i in labels)
        groups = torch.arange(n) // 3
        pending_items = [i % n for i in pending]
        barred = sorted({i % n for i in excluded})
        allowed = torch.ones(n, dtype=torch.bool)
        allowed[barred] = False
        direct = direct_exposure(counts.counts(n), torch.tensor(pending_items), allowed, min_labels)
        kept = counts.starved(
            n, pending_items, barred, min_labels, torch.device("cpu"), groups=groups
        )
        if direct is None:
            assert kept is None
            continue
        assert kept is not None
        assert kept.focus.tolist() == direct.focus.tolist()
        assert (kept.deficit, kept.count) == (direct.deficit, direct.count)
        holds = torch.zeros(int(groups.max()) + 1, dtype=torch.bool)
        holds[groups[direct.focus]] = True
        assert kept.groups is not None and kept.groups.tolist() == holds.tolist()
