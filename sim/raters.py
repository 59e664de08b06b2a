"""Simulated raters: Thurstone noise per rater, ties inside a margin, lapses, random clickers.

A rater r perceives `d = q_i - q_j + e`, `e ~ N(0, sigma_r^2)` (Thurstone case V on the JOD
scale: sigma = 1.4826 makes a 1 JOD difference a 75 % preference), answers a tie when
`|d| < tie_margin`, and otherwise the side d points to. With probability `lapse_rate` any rater
answers uniformly at random instead; a random clicker always does. An emoji rating of clip i is
the level of `q_i + e` among ordered thresholds (ordered probit). With a side bias, rater r
perceives `q_left - q_right + o_r + e` (o_r drawn per rater: positive favours the left clip).
A K-set (K clips of one prompt) is answered by the order of `q_k + e_k`,
`e_k ~ N(0, sigma_r^2 / 2)` (Thurstonian). A criterion question ("which is better aligned?")
is answered like a pair on the two clips' true values of that criterion, with the rater's own
criterion noise (drawn per rater around `criterion_noise_sd`, on the criteria's unit scale).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from engine import Outcome
from engine.adapters import JOD_NOISE_SD
from engine.questions import BOTH_BAD, BOTH_GOOD


@dataclass(frozen=True)
class RaterSpec:
    """How the rater population behaves.

    Attributes:
        n_raters: size of the population labels are drawn from.
        concurrent: raters working at once; each holds one pending assignment.
        noise_sd: median Thurstone noise sd (JOD units).
        noise_spread: sd of log noise across raters (heterogeneity; 0 = identical raters).
        lapse_rate: probability that any answer is a uniform random click.
        random_fraction: fraction of raters who always click at random.
        tie_margin: a perceived difference inside (-t, t) is answered as a tie; 0 = forced choice.
        emoji_thresholds: ordered cuts of the emoji levels on the quality scale (JOD).
        side_bias: mean side offset across raters (JOD; positive favours the left clip).
        side_spread: sd of the side offset across raters.
        both_threshold: tau: a tie whose perceived pair mean is above tau is answered "both
            good", below -tau "both bad" (each clip seen with the rater's noise); None: ties
            stay ties.
        criterion_noise_sd: median noise sd of a criterion answer (on the true criteria's
            unit scale), spread across raters by `noise_spread`, drawn independently of
            their quality noise; None: the raters answer no criterion questions.
    """

    n_raters: int = 20
    concurrent: int = 4
    noise_sd: float = JOD_NOISE_SD
    noise_spread: float = 0.2
    lapse_rate: float = 0.0
    random_fraction: float = 0.0
    tie_margin: float = 0.0
    emoji_thresholds: tuple[float, ...] = (-1.5, -0.5, 0.5, 1.5)
    side_bias: float = 0.0
    side_spread: float = 0.0
    both_threshold: float | None = None
    criterion_noise_sd: float | None = None

    def __post_init__(self) -> None:
        if self.n_raters < 1 or not 1 <= self.concurrent <= self.n_raters:
            raise ValueError("need n_raters >= 1 and 1 <= concurrent <= n_raters")
        if not (self.noise_sd > 0 and math.isfinite(self.noise_sd)) or self.noise_spread < 0:
            raise ValueError("noise_sd must be finite and > 0, noise_spread >= 0")
        if not (0 <= self.lapse_rate <= 1 and 0 <= self.random_fraction <= 1):
            raise ValueError("lapse_rate and random_fraction must be in [0, 1]")
        if not (self.tie_margin >= 0 and math.isfinite(self.tie_margin)):
            raise ValueError("tie_margin must be finite and >= 0")
        if list(self.emoji_thresholds) != sorted(set(self.emoji_thresholds)):
            raise ValueError("emoji thresholds must be strictly increasing")
        if not (math.isfinite(self.side_bias) and 0 <= self.side_spread < math.inf):
            raise ValueError("side_bias must be finite and side_spread finite and >= 0")
        if self.both_threshold is not None and not (
            self.tie_margin > 0 and 0 <= self.both_threshold < math.inf
        ):
            raise ValueError("both_threshold needs a tie margin and a finite value >= 0")
        if self.criterion_noise_sd is not None and not (
            self.criterion_noise_sd > 0 and math.isfinite(self.criterion_noise_sd)
        ):
            raise ValueError("criterion_noise_sd must be finite and > 0")

    @property
    def sided(self) -> bool:
        """Whether raters favour a side (and a page's side draw matters)."""
        return self.side_bias != 0 or self.side_spread > 0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class RaterPool:
    """A drawn population of raters who answer pairs and emoji ratings.

    Args:
        spec: the population's behaviour.
        rng: draws each rater's noise and who clicks at random.
    """

    def __init__(self, spec: RaterSpec, rng: np.random.Generator) -> None:
        self.spec = spec
        self.noise_sd = spec.noise_sd * np.exp(
            spec.noise_spread * rng.standard_normal(spec.n_raters)
        )
        n_random = round(spec.random_fraction * spec.n_raters)
        self.is_random = np.zeros(spec.n_raters, dtype=bool)
        self.is_random[rng.choice(spec.n_raters, size=n_random, replace=False)] = True
        # drawn only for a sided population: the draws above stay as they were without one
        self.side_offset = np.zeros(spec.n_raters)
        if spec.sided:
            self.side_offset = spec.side_bias + spec.side_spread * rng.standard_normal(
                spec.n_raters
            )
        # likewise drawn only where raters answer criterion questions
        self.criterion_noise_sd = np.zeros(spec.n_raters)
        if spec.criterion_noise_sd is not None:
            self.criterion_noise_sd = spec.criterion_noise_sd * np.exp(
                spec.noise_spread * rng.standard_normal(spec.n_raters)
            )

    def _clicks_at_random(self, rater: int, rng: np.random.Generator) -> bool:
        return bool(self.is_random[rater]) or rng.random() < self.spec.lapse_rate

    def answer_pair(
        self,
        quality_first: float,
        quality_second: float,
        rater: int,
        rng: np.random.Generator,
        first_left: bool = True,
    ) -> Outcome | str:
        """The rater's verdict on `first` against `second`, `first` shown left or right (an
        Outcome, or "both_good" / "both_bad" where the raters say so)."""
        if self._clicks_at_random(rater, rng):
            options: tuple[Outcome | str, ...] = (
                (Outcome.WIN, Outcome.TIE, Outcome.LOSS)
                if self.spec.tie_margin > 0
                else (
                    Outcome.WIN,
                    Outcome.LOSS,
                )
            )
            if self.spec.both_threshold is not None:
                options = (*options, BOTH_GOOD, BOTH_BAD)
            return options[int(rng.integers(len(options)))]
        side = self.side_offset[rater] if first_left else -self.side_offset[rater]
        perceived = (
            quality_first - quality_second + side + self.noise_sd[rater] * rng.standard_normal()
        )
        if abs(perceived) < self.spec.tie_margin:
            both = self.spec.both_threshold
            if both is None:
                return Outcome.TIE
            # where the pair stands: each clip seen with the rater's noise
            mean = 0.5 * (
                quality_first
                + quality_second
                + math.sqrt(2) * self.noise_sd[rater] * rng.standard_normal()
            )
            return BOTH_GOOD if mean > both else BOTH_BAD if mean < -both else Outcome.TIE
        return Outcome.WIN if perceived > 0 else Outcome.LOSS

    def answer_criterion(
        self, value_first: float, value_second: float, rater: int, rng: np.random.Generator
    ) -> Outcome:
        """The rater's verdict on `first` against `second` on one criterion, from their true
        values of it: a pair answer with the rater's criterion noise (ties inside the tie
        margin, lapses and random clickers as for pairs).

        Raises:
            ValueError: the population answers no criterion questions.
        """
        if self.spec.criterion_noise_sd is None:
            raise ValueError("these raters answer no criterion questions (criterion_noise_sd)")
        if self._clicks_at_random(rater, rng):
            options = (
                (Outcome.WIN, Outcome.TIE, Outcome.LOSS)
                if self.spec.tie_margin > 0
                else (Outcome.WIN, Outcome.LOSS)
            )
            return options[int(rng.integers(len(options)))]
        perceived = (
            value_first - value_second + self.criterion_noise_sd[rater] * rng.standard_normal()
        )
        if abs(perceived) < self.spec.tie_margin:
            return Outcome.TIE
        return Outcome.WIN if perceived > 0 else Outcome.LOSS

    def answer_kset(
        self,
        qualities: np.ndarray,
        items: tuple[int, ...],
        mode: str,
        rater: int,
        rng: np.random.Generator,
    ) -> tuple[int, ...]:
        """The rater's answer to a K-set of `items` with these true qualities: Thurstonian, each
        clip seen as `q_k + e_k`, `e_k ~ N(0, sigma_r^2 / 2)` (a pair's difference then has the
        pair noise sigma_r^2), answered by that order: `(best,)`, `(best, worst)` or the order,
        best first. A random click is a uniform random order."""
        if self._clicks_at_random(rater, rng):
            order = rng.permutation(len(items))
        else:
            perceived = qualities + self.noise_sd[rater] / math.sqrt(2) * rng.standard_normal(
                len(items)
            )
            order = np.argsort(-perceived, kind="stable")
        ranked = tuple(int(items[k]) for k in order)
        return {"best": ranked[:1], "best_worst": (ranked[0], ranked[-1]), "rank": ranked}[mode]

    def answer_rating(self, quality: float, rater: int, rng: np.random.Generator) -> int:
        """The rater's emoji level (0 = worst) for a clip of this quality."""
        n_levels = len(self.spec.emoji_thresholds) + 1
        if self._clicks_at_random(rater, rng):
            return int(rng.integers(n_levels))
        perceived = quality + self.noise_sd[rater] * rng.standard_normal()
        return int(np.searchsorted(self.spec.emoji_thresholds, perceived))


__all__ = ["RaterPool", "RaterSpec"]
