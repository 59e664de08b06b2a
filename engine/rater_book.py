"""The rater book: each rater's noise (set by the operator, or learned) and reliability (keep
probability, noise posterior, flag), with the labels and (keep, sigma) grids they come from
(engine.reliability). One owner for these facts; the campaign asks it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from engine.reliability import RaterGrid, RaterReliability, rater_posteriors

if TYPE_CHECKING:
    from engine.campaign import CampaignConfig, Judgment

RATER_REFIT_BELOW = 8  # a rater with fewer labels is re-derived from all of them each batch
# raters past RATER_BUDGET_FROM labels whose count doubled share this many re-scored labels a
# batch (raters answering at one pace double together: spread over batches, no stall)
RATER_REDERIVE_BUDGET = 256
RATER_BUDGET_FROM = 64
# past this many labels a rater's grid is only added to: re-scoring a long-standing rater's
# labels holds the service's engine up for everyone waiting on it, and labels scored under a
# posterior that had hundreds of labels already barely move when re-scored
RATER_REDERIVE_UP_TO = 512

# Scores lists of labels (one list per rater) on the (keep, sigma) grid, each label under its
# cavity in the campaign's current posterior: the campaign's, which knows the events, the
# posterior and its sites.
GridScorer = Callable[[Sequence[Sequence["Judgment"]]], list[RaterGrid]]


class RaterBook:
    """Per rater: a noise sd set by the operator, their labels, their grid and the label count
    it was last re-derived at, and their reliability summary."""

    def __init__(self) -> None:
        self._noise: dict[Hashable, float] = {}
        self.reliability: dict[Hashable, RaterReliability] = {}
        self.grids: dict[Hashable, tuple[RaterGrid, int]] = {}
        self.judgments: dict[Hashable, list[Judgment]] = {}
        # each rater's position among the side block's rater offsets (engine.position), in the
        # order of their first comparison with a recorded side: a replay gives the same
        self.side_slots: dict[Hashable, int] = {}

    def add_side_slots(self, raters: Iterable[Hashable | None]) -> int:
        """Give the raters without a side slot one (anonymous raters get none); returns how
        many were new."""
        before = len(self.side_slots)
        for rater in raters:
            if rater is not None and rater not in self.side_slots:
                self.side_slots[rater] = len(self.side_slots)
        return len(self.side_slots) - before

    def set_noise(self, rater: Hashable, noise_sd: float) -> None:
        self._noise[rater] = float(noise_sd)

    def with_set_noise(self) -> RaterBook:
        """A new book holding only the noise the operator set (what a replay starts from)."""
        book = RaterBook()
        book._noise = dict(self._noise)
        return book

    def without_labels(self) -> tuple[RaterBook, dict[Hashable, int]]:
        """This book without its raters' labels (sharing the rest), and how many labels each
        rater has: what a refitted copy sends back (engine.refit_result), where the campaign
        it adopts into holds the same labels (`with_labels_of`)."""
        book = RaterBook()
        book._noise, book.reliability, book.grids = self._noise, self.reliability, self.grids
        book.side_slots = self.side_slots
        return book, {rater: len(own) for rater, own in self.judgments.items()}

    def with_labels_of(self, other: RaterBook, counts: dict[Hashable, int]) -> None:
        """Take, for each rater in `counts` and in its order, the first `counts[rater]` of
        `other`'s labels of the rater (the labels `without_labels` counted, as `other`, a book
        of the same labels in the same order and perhaps more after them, holds them).

        Raises:
            ValueError: `other` has fewer labels of a rater.
        """
        for rater, count in counts.items():
            own = other.judgments.get(rater, [])
            if len(own) < count:
                raise ValueError(f"rater {rater!r} has {len(own)} labels here, not {count}")
        self.judgments = {rater: other.judgments[rater][:count] for rater, count in counts.items()}

    def noise_sd(self, rater: Hashable | None, config: CampaignConfig) -> float:
        """The rater's noise sd: set, else learned (learn_rater_noise), else the default."""
        if rater in self._noise:
            return self._noise[rater]
        if config.learn_rater_noise and rater in self.reliability:
            return self.reliability[rater].noise_sd
        return config.noise_sd

    def keep_probability(self, rater: Hashable | None, config: CampaignConfig) -> float:
        """The posterior mean probability that `rater` answers as the model says (the prior
        mean before their first label; 1 when lapses are not modelled)."""
        if config.lapse_prior is None:
            return 1.0
        if rater in self.reliability:
            return self.reliability[rater].keep
        alpha, beta = config.lapse_prior
        return (1 - config.random_rater_share) * alpha / (alpha + beta)

    def labelled(self) -> list[list[Judgment]]:
        """Each rater's labels, for raters with any."""
        return [own for own in self.judgments.values() if own]

    def learn(
        self, judgments: Sequence[Judgment], config: CampaignConfig, score: GridScorer
    ) -> None:
        """Update each rater in the batch with their new labels (engine.reliability).

        Each label is scored under its cavity in the current posterior (the posterior of all
        the other labels, docs/MATH.md §2, eq. (2.2)): under the posterior that holds the label
        itself, honest raters' noise came out ~0.6x the truth; under the posterior at the time,
        a campaign's first labels all look like coin flips. A rater's grid is re-derived from
        all their labels under the current posterior whenever their label count has doubled
        since the last time (and always below RATER_REFIT_BELOW labels); in between the new
        labels' terms (each scored under its cavity, then the posterior before it) are added.
        Amortised O(1) grid work per label, where a full refit per batch costs O(labels so
        far) and grows without bound."""
        new: dict[Hashable, list[Judgment]] = {}
        for judgment in judgments:
            self.judgments.setdefault(judgment.rater, []).append(judgment)
            new.setdefault(judgment.rater, []).append(judgment)
        self.refit(
            {rater: (self.judgments[rater], fresh) for rater, fresh in new.items()}, config, score
        )

    def refit_all(self, config: CampaignConfig, score: GridScorer) -> None:
        """Re-derive every rater from all their labels (after the prior changed)."""
        self.refit({rater: (own, own) for rater, own in self.judgments.items()}, config, score)

    def refit(
        self,
        updates: dict[Hashable, tuple[Sequence[Judgment], Sequence[Judgment]]],
        config: CampaignConfig,
        score: GridScorer,
    ) -> None:
        """Per rater, `(own, fresh)`: add `fresh` (the last of `own`) to the rater's grid, or
        re-derive it from `own` (new raters, below RATER_REFIT_BELOW labels, or once `own` has
        doubled since the last re-derivation, up to RATER_REDERIVE_UP_TO labels, as far as
        RATER_REDERIVE_BUDGET labels a batch allow: a rater past it waits for a later batch,
        added to meanwhile).

        The labels of all of them are scored in one `score` call and summarised in one
        `rater_posteriors` call: per rater and batch, Python and dispatch overhead cost more
        than the grid work of a few labels (service batches hold labels of 16-64 raters)."""
        if not updates:
            return
        scored: list[Sequence[Judgment]] = []
        rederived: list[bool] = []
        budget = RATER_REDERIVE_BUDGET
        for rater, (own, fresh) in updates.items():
            cached = self.grids.get(rater)
            again = cached is None or len(fresh) == len(own) or len(own) < RATER_REFIT_BELOW
            if (
                cached is not None
                and not again
                and 2 * cached[1] <= len(own) <= RATER_REDERIVE_UP_TO
                and (len(own) < RATER_BUDGET_FROM or budget > 0)
            ):
                # doubled: re-derived now, or past RATER_BUDGET_FROM labels when the batch's
                # budget allows, else added to now and re-derived with a later batch
                again = True
                if len(own) >= RATER_BUDGET_FROM:
                    budget -= len(own)
            rederived.append(again)
            scored.append(own if again else fresh)
        grids = score(scored)
        for (rater, (own, _)), again, grid in zip(updates.items(), rederived, grids, strict=True):
            if again:
                self.grids[rater] = (grid, len(own))
            else:
                cached_grid, base = self.grids[rater]
                added = replace(
                    cached_grid,
                    log_likelihood=cached_grid.log_likelihood + grid.log_likelihood,
                    labels=cached_grid.labels + grid.labels,
                )
                self.grids[rater] = (added, base)
        summaries = rater_posteriors(
            [self.grids[rater][0] for rater in updates],
            default_noise_sd=config.noise_sd,
            spread=config.noise_prior_spread,
        )
        self.reliability.update(zip(updates, summaries, strict=True))


__all__ = [
    "RATER_BUDGET_FROM",
    "RATER_REDERIVE_BUDGET",
    "RATER_REDERIVE_UP_TO",
    "RATER_REFIT_BELOW",
    "RaterBook",
]
