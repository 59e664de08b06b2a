"""K-sets in a campaign's task issuing (CampaignConfig.kset): when they are handed out, how a
pending K-set shrinks the covariance, and how answer times teach the clock (docs/MATH.md §3-4,
K-sets)."""

from __future__ import annotations

import pytest
import torch

from engine import Campaign, CampaignConfig, Judgment, KSetOffer, Task
from engine.questions import KSet, Pair
from engine.task_choice import TaskClock, choose_task_from_moments

SEED = 0
ATOL = 1e-9


def _campaign(offer: KSetOffer | None, n_prompts: int = 3, per_prompt: int = 6) -> Campaign:
    campaign = Campaign(
        CampaignConfig(criteria=(), pair_scope="group", kset=offer), dtype=torch.float64
    )
    groups = [f"p{k // per_prompt}" for k in range(n_prompts * per_prompt)]
    campaign.add_clips(count=len(groups), groups=groups)
    return campaign


def test_kset_is_off_by_default_and_pairs_come_as_before() -> None:
    campaign = _campaign(None)
    tasks = campaign.next_tasks("r", 3)
    assert [task.question.kind for task in tasks] == ["pair"] * 3


@pytest.mark.parametrize(("mode", "size"), [("best", 4), ("best_worst", 4), ("rank", 5)])
def test_a_kset_comes_alone_when_it_is_worth_more_per_second(mode, size) -> None:
    campaign = _campaign(KSetOffer(size=size, mode=mode))
    (task,) = campaign.next_tasks("r", 3)
    question = task.question
    assert isinstance(question, KSet)
    assert question.mode == mode and len(question.items) == size
    assert list(question.items) == sorted(question.items)
    assert len({campaign.groups[i].item() for i in question.items}) == 1  # one prompt
    assert task.gain > 0 and sum(task.probabilities) == pytest.approx(1.0)
    assert campaign.pending == (task,)


def test_slow_ksets_give_way_to_pairs() -> None:
    campaign = _campaign(KSetOffer(size=5, mode="rank"))
    assert isinstance(campaign.next_task("r", hold=False).question, KSet)
    # raters who take ten minutes per order make a pair the better use of their time; the
    # labels' times teach it (a replay learns the same)
    for k in range(40):
        items = (0, 1, 2, 3, 4) if k % 2 else (6, 7, 8, 9, 10)
        campaign.observe([Judgment.kset(f"t{k}", items, items, "rank", seconds=600.0)])
    assert campaign.task_seconds("kset:rank:5") > 400
    assert campaign.next_task("r", hold=False).question.kind == "pair"
    assert campaign.replay().task_seconds("kset:rank:5") == campaign.task_seconds("kset:rank:5")


def test_a_kset_respects_exclusions_and_what_the_rater_answered() -> None:
    campaign = _campaign(KSetOffer(size=4), n_prompts=1, per_prompt=5)
    first = campaign.next_task("r", hold=False).question
    assert isinstance(first, KSet)
    left_out = first.items[0]
    second = campaign.next_task("r", exclude=[left_out], hold=False).question
    assert left_out not in second.items
    # a set the caller names, or one the rater answered, is not offered again to them
    skipped = campaign.next_tasks("r", skip_ksets=[first.items], hold=False)[0].question
    assert not (isinstance(skipped, KSet) and skipped.key == first.key)
    campaign.observe([Judgment.kset("r", first.items, first.items[:1])])
    again = campaign.next_task("r", hold=False).question
    assert not (isinstance(again, KSet) and again.key == first.key)


def test_blocks_refuse_ksets_at_creation() -> None:
    with pytest.raises(ValueError, match='structure="dense"'):
        CampaignConfig(pair_scope="group", structure="blocks", kset=KSetOffer())
    with pytest.raises(ValueError, match="3 to 6"):
        KSetOffer(size=7)
    with pytest.raises(ValueError, match="mode"):
        KSetOffer(mode="worst")


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("best", ((3, 0), (3, 1), (3, 2))),  # the highest mean beats each other clip
        ("best_worst", ((3, 0), (3, 1), (3, 2), (1, 0), (2, 0))),
        ("rank", ((3, 2), (2, 1), (1, 0))),  # the K - 1 neighbours in mean order
    ],
)
def test_a_pending_kset_shrinks_along_its_predicted_answer(mode, expected) -> None:
    campaign = _campaign(None, n_prompts=1, per_prompt=6)
    # means in clip order 0 < 1 < 2 < 3: each clip beats the one before
    campaign.observe([Judgment.kset(None, (0, 1, 2, 3), (3, 2, 1, 0), "rank")] * 2)
    as_pairs = campaign.replay()
    nothing = campaign.replay()
    campaign.hold(Task(1000, "r", KSet((0, 1, 2, 3), mode), 1.0, ()))
    for k, (first, second) in enumerate(expected):
        as_pairs.hold(Task(1000 + k, "r", Pair(first, second), 1.0, ()))
    # the pending K-set shrinks exactly as its predicted comparisons held as pairs
    kset_choice = campaign.next_pairs("q", 4, exclude=[4, 5], hold=False)
    pair_choice = as_pairs.next_pairs("q", 4, exclude=[4, 5], hold=False)
    assert [t.question for t in kset_choice] == [t.question for t in pair_choice]
    for with_kset, with_pairs in zip(kset_choice, pair_choice, strict=True):
        assert with_kset.gain == pytest.approx(with_pairs.gain, abs=ATOL)
    # and it does shrink: without it the first pick's gain is larger
    free = nothing.next_pairs("q", 1, exclude=[4, 5], hold=False)[0]
    assert free.gain > kset_choice[0].gain + 1e-3


def test_a_pending_kset_steers_the_next_choice_away() -> None:
    campaign = _campaign(KSetOffer(size=4), n_prompts=2, per_prompt=4)
    first = campaign.next_task("a")
    second = campaign.next_task("b")
    assert isinstance(first.question, KSet)
    # the other prompt's set is worth more now that the first is pending
    assert set(second.question.items).isdisjoint(first.question.items)
    campaign.release(first.id)
    assert campaign.pending == (second,)


def test_answer_times_replay_and_bad_times_are_refused() -> None:
    campaign = _campaign(None, n_prompts=1, per_prompt=3)
    campaign.observe([Judgment.pair("r", 0, 1, "win", seconds=3.0)])
    assert campaign.task_seconds("pair") == pytest.approx((5 * 6.0 + 3.0) / 6)
    before = campaign.posterior.mean.clone()
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="seconds"):
            campaign.observe([Judgment(None, Pair(0, 2), "win", seconds=bad)])
    assert torch.equal(campaign.posterior.mean, before)
    assert campaign.replay().task_seconds("pair") == campaign.task_seconds("pair")


def test_an_offer_states_its_seconds_and_answers_refine_them() -> None:
    campaign = _campaign(KSetOffer(size=4, mode="rank", seconds=3.0))
    assert campaign.task_seconds("kset:rank:4") == 3.0
    assert campaign.task_seconds("kset:best:4") == 14.0  # other kinds keep the stated model
    # an order of 4 is worth more than a pair at 3 s (not at the stated model's 20 s)
    assert isinstance(campaign.next_task("r", hold=False).question, KSet)
    campaign.observe([Judgment.kset("r", (0, 1, 2, 3), (3, 2, 1, 0), "rank", seconds=13.0)])
    assert campaign.task_seconds("kset:rank:4") == pytest.approx((5 * 3.0 + 13.0) / 6)
    with pytest.raises(ValueError, match="seconds"):
        KSetOffer(seconds=0.0)


def test_the_blockwise_shrink_is_the_shrunk_covariance() -> None:
    generator = torch.Generator().manual_seed(SEED)
    n, q = 12, 3
    factor_matrix = torch.randn(n, n, generator=generator, dtype=torch.float64)
    cov = factor_matrix @ factor_matrix.T / n + torch.eye(n, dtype=torch.float64)
    mean = torch.randn(n, generator=generator, dtype=torch.float64)
    columns = 0.3 * torch.randn(n, q, generator=generator, dtype=torch.float64)
    factor = torch.rand(q, generator=generator, dtype=torch.float64) * 0.5
    groups = torch.arange(n) // 6
    clock = TaskClock()
    blockwise = choose_task_from_moments(
        mean, cov, groups, clock, noise_var=1.0, sizes=(2, 4), shrink=(columns, factor)
    )
    whole = choose_task_from_moments(
        mean, cov - (columns * factor) @ columns.T, groups, clock, noise_var=1.0, sizes=(2, 4)
    )
    assert blockwise.question == whole.question
    assert blockwise.gain == pytest.approx(whole.gain, abs=1e-12)


def test_a_kset_comes_when_no_pair_is_left() -> None:
    # an order of 4 at the stated 20 s loses to a pair, but a rater with no pair left gets it
    campaign = _campaign(KSetOffer(size=4, mode="rank"), n_prompts=1, per_prompt=4)
    assert campaign.next_task("r", hold=False).question.kind == "pair"
    every_pair = [(i, j) for i in range(4) for j in range(i + 1, 4)]
    (task,) = campaign.next_tasks("r", forbidden_pairs=every_pair, hold=False)
    assert task.question == KSet((0, 1, 2, 3), "rank")
