"""Random block-structured campaigns for the block-form tests: clips in prompt groups, one
context per group, scores with holes, labels within groups."""

from __future__ import annotations

import math

import torch

from engine.state import Posterior, PriorScales, add_contexts, add_items, empty_posterior
from engine.structured import GroupedPosterior, grouped_prior
from engine.update import interval_events

PAIR_INTERVALS = ((0.3, math.inf), (-math.inf, -0.3), (-0.3, 0.3))  # win, loss, tie at t = 0.3
LEVEL_INTERVALS = ((-math.inf, -0.5), (-0.5, 0.5), (0.5, math.inf))


class World:
    """A random campaign layout: clips in groups, one context per group, scores with holes."""

    def __init__(self, seed: int, n_criteria: int, n_groups: int, n_contexts: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)
        self.n_criteria, self.n_contexts = n_criteria, n_contexts
        self.group_context = self.randint(n_contexts, n_groups)
        weight_mean = tuple(self.randn(n_criteria).tolist()) if seed % 2 else None
        self.prior = PriorScales(
            weight_scale=0.3 + float(torch.rand((), generator=self.generator)),
            context_scale=0.1 + 0.5 * float(torch.rand((), generator=self.generator)),
            residual_scale=0.5 + float(torch.rand((), generator=self.generator)),
            weight_mean=weight_mean,
        )

    def randint(self, high: int, size: int) -> torch.Tensor:
        return torch.randint(0, high, (size,), generator=self.generator)

    def randn(self, *shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=self.generator)

    def clips(self, count: int, groups: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`count` clips in groups 0..groups-1: scores (some missing), contexts, groups."""
        scores = self.randn(count, self.n_criteria)
        scores[torch.rand(count, self.n_criteria, generator=self.generator) < 0.15] = math.nan
        group = self.randint(groups, count)
        return scores, self.group_context[group], group

    def events(self, group: torch.Tensor, count: int, *, lapses: bool):
        """Pairs within groups (win, loss, tie) and single-clip levels, each rater's noise."""
        first, second, intervals = [], [], []
        for _ in range(count):
            g = int(group[int(self.randint(group.numel(), 1))])
            members = torch.nonzero(group == g).flatten()
            if members.numel() > 1 and float(torch.rand((), generator=self.generator)) < 0.75:
                a, b = members[torch.randperm(members.numel(), generator=self.generator)[:2]]
                first.append(int(a))
                second.append(int(b))
                intervals.append(PAIR_INTERVALS[int(self.randint(3, 1))])
            else:
                first.append(int(members[0]))
                second.append(-1)
                intervals.append(LEVEL_INTERVALS[int(self.randint(3, 1))])
        noise = (0.3 + torch.rand(count, generator=self.generator)).tolist()
        keep = (0.6 + 0.4 * torch.rand(count, generator=self.generator)).tolist()
        return interval_events(
            first,
            second,
            intervals,
            noise,
            torch.zeros(()),
            keep=keep if lapses else None,
            n_outcomes=[3.0] * count if lapses else None,
        )


def dense_prior(world: World, scores: torch.Tensor, context: torch.Tensor) -> Posterior:
    """engine.state's dense prior over the clips: the reference the block form must equal."""
    posterior = empty_posterior(world.n_criteria, world.prior)
    posterior = add_contexts(posterior, world.n_contexts, world.prior)
    return add_items(posterior, scores, context, world.prior)


def labelled_blocks(
    layout: tuple[int, int, int, int], n_labels: int
) -> tuple[GroupedPosterior, torch.Tensor, World]:
    """A block-form campaign of `layout` (seed, criteria, groups, contexts), 4 clips a group
    on average, after `n_labels` labels within groups: the posterior, the clips' groups and
    the world."""
    seed, n_criteria, n_groups, n_contexts = layout
    world = World(seed, n_criteria, n_groups, n_contexts)
    scores, context, group = world.clips(4 * n_groups, n_groups)
    posterior = grouped_prior(scores, context, group, n_contexts, world.prior)
    posterior.observe(world.events(group, n_labels, lapses=False))
    return posterior, group, world
