"""Worlds with a known truth: synthetic campaigns and replays of recorded comparisons.

A world shows strategies only a `Problem` (what a real campaign knows: clip count, reward-model
scores, contexts, groups, the pairing scope) and answers the pairs they ask. The truth
(`quality`, in JOD) stays with the world, for the metrics.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Hashable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from engine import DEFAULT_CRITERIA, Outcome
from sim.estimators import fit_thurstone, outcome_signs, win_counts
from sim.raters import RaterPool, RaterSpec


@dataclass(frozen=True)
class Problem:
    """What a strategy may know: the campaign as a rating platform sees it.

    Attributes:
        n_items: number of clips.
        criteria: reward-model criterion names (empty: no reward model).
        scores: (n, K) raw reward-model scores (NaN where missing), or None when K = 0.
        contexts, groups: (n,) context (prompt category) and group (prompt) per clip.
        pair_scope: "group" = only pairs within a group, "any" = all pairs.
        tie_margin: the raters' tie margin (0 = forced choice).
        candidates: (P, 2) every pair (i < j) the scope allows.
        both_threshold: tau of the raters' "both good" / "both bad" (None: they only tie).
        features: (n, D) each clip's prompt feature vector, or None (engine.gating).
    """

    n_items: int
    criteria: tuple[str, ...]
    scores: np.ndarray | None
    contexts: np.ndarray
    groups: np.ndarray
    pair_scope: str
    tie_margin: float
    candidates: np.ndarray
    both_threshold: float | None = None
    features: np.ndarray | None = None


def candidate_pairs(groups: np.ndarray, pair_scope: str) -> np.ndarray:
    """(P, 2) all pairs i < j in lexicographic order, restricted to shared groups when
    `pair_scope` is "group": then built group by group (all groups of one size at once), in
    O(P + n log n), not from the n (n - 1) / 2 pairs of every clip."""
    if pair_scope != "group":
        first, second = np.triu_indices(len(groups), k=1)
        return np.stack((first, second), axis=1).astype(np.int64)
    groups = np.asarray(groups)
    order = np.argsort(groups, kind="stable")  # members ascending within each group
    ordered = groups[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]]) if len(groups) else []
    sizes = np.diff(np.r_[starts, len(groups)]).astype(np.int64)
    pieces = [np.zeros((0, 2), dtype=np.int64)]
    for size in np.unique(sizes[sizes > 1]):
        members = order[starts[sizes == size][:, None] + np.arange(size)]  # (B, size)
        a, b = np.triu_indices(size, k=1)
        pieces.append(np.stack((members[:, a].ravel(), members[:, b].ravel()), axis=1))
    pairs = np.concatenate(pieces).astype(np.int64)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


@dataclass(frozen=True)
class SyntheticSpec:
    """A synthetic campaign (MATH.md §1's model, with the truth drawn).

    True criteria c_i ~ N(0, I_K); clip i of context k has quality
    `q_i = w_k . c_i + u_i`, with |w_k|^2 = share * sd^2 and u_i ~ N(0, (1 - share) sd^2), so
    sd(q) = quality_sd and the criteria explain `criteria_share` of its variance. Contexts'
    weight directions differ by `context_spread`. The reward model reports
    `s_i = lam c_i + sqrt(1 - lam^2) e_i` (then an affine map per criterion, like a real
    model's raw scale) with lam = rm_correlation / sqrt(share): the reward-model-implied
    quality `w_k . s_i` then correlates with q exactly `rm_correlation` in every context.

    Attributes:
        n_items, n_groups, n_contexts, n_criteria: sizes (groups are prompts, contexts
            prompt categories; group g belongs to context g mod C).
        rm_correlation: corr(reward-model-implied quality, truth): 0 useless, 0.9 strong.
        criteria_share: fraction of quality variance the true criteria explain.
        quality_sd: sd of true quality (JOD).
        context_spread: how far contexts' weight directions differ (0 = identical).
        missing_scores: fraction of reward-model scores that are missing.
        pair_scope: "any" or "group".
        raters: the rater population.
        positive_weights: every criterion counts toward quality with a positive weight (a
            reward model whose criteria all say "higher is better"); False draws the signs.
    """

    n_items: int = 100
    n_groups: int = 10
    n_contexts: int = 3
    n_criteria: int = 5
    rm_correlation: float = 0.0
    criteria_share: float = 0.9
    quality_sd: float = 1.5
    context_spread: float = 0.7
    missing_scores: float = 0.0
    pair_scope: str = "any"
    raters: RaterSpec = field(default_factory=RaterSpec)
    positive_weights: bool = False

    def __post_init__(self) -> None:
        if self.n_items < 2 or not 1 <= self.n_groups <= self.n_items:
            raise ValueError("need n_items >= 2 and 1 <= n_groups <= n_items")
        if not 1 <= self.n_contexts <= self.n_groups:
            raise ValueError("need 1 <= n_contexts <= n_groups")
        if self.n_criteria < 0:
            raise ValueError("n_criteria must be >= 0")
        if not 0 < self.criteria_share <= 1 or self.quality_sd <= 0:
            raise ValueError("criteria_share must be in (0, 1] and quality_sd > 0")
        limit = math.sqrt(self.criteria_share) if self.n_criteria else 0.0
        if not 0 <= self.rm_correlation <= limit:
            raise ValueError(
                f"rm_correlation must be in [0, sqrt(criteria_share)] = [0, {limit:.3f}] "
                f"with {self.n_criteria} criteria"
            )
        if not 0 <= self.missing_scores < 1:
            raise ValueError("missing_scores must be in [0, 1)")
        if self.pair_scope not in ("any", "group"):
            raise ValueError("pair_scope must be 'any' or 'group'")
        if self.pair_scope == "group" and self.n_items < 2 * self.n_groups:
            raise ValueError("a same-group scope needs at least two clips per group")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class World:
    """A campaign with a known truth: what strategies see, how raters answer, what is true.

    Attributes:
        problem: the public view strategies get.
        quality: (n,) true quality in JOD (what the metrics compare against).
        true_weights: (C, K) weights of the reward model's standardised scores in the best
            linear predictor of quality per context, or None where unknown.
        truth: a sentence saying what the truth is.
        budget: the most labels the world can give (None: unlimited).
    """

    problem: Problem
    quality: np.ndarray
    true_weights: np.ndarray | None
    truth: str
    budget: int | None = None

    def available(self, pending: np.ndarray) -> np.ndarray | None:
        """(P,) bool: candidates that can still be asked, given (P,) pending counts; None = all."""
        return None

    def shown_left(self, first: int, second: int, rng: np.random.Generator) -> int | None:
        """The clip the page shows on the left (drawn at random), or None where the side
        cannot matter (no draw is made then)."""
        return None

    def answer_pair(
        self,
        first: int,
        second: int,
        rater: int,
        rng: np.random.Generator,
        left: int | None = None,
    ):
        """(outcome of first vs second, the rater who answered); `left` the clip shown left."""
        raise NotImplementedError

    def answer_rating(self, item: int, rater: int, rng: np.random.Generator) -> tuple[int, int]:
        raise ValueError("this world has no emoji ratings")

    def answer_kset(
        self, items: tuple[int, ...], mode: str, rater: int, rng: np.random.Generator
    ) -> tuple[tuple[int, ...], int]:
        """(the answer to a K-set of `items`: best, best and worst, or the order; the rater)."""
        raise ValueError("this world has no K-set answers")

    def describe(self) -> dict[str, object]:
        raise NotImplementedError


class PooledWorld(World):
    """A world whose simulated raters (`raters`, a `RaterPool`) answer from its true
    `quality`."""

    raters: RaterPool

    def answer_pair(
        self,
        first: int,
        second: int,
        rater: int,
        rng: np.random.Generator,
        left: int | None = None,
    ) -> tuple[Outcome, int]:
        q = self.quality
        outcome = self.raters.answer_pair(q[first], q[second], rater, rng, left != second)
        return outcome, rater


class SyntheticWorld(PooledWorld):
    """A drawn synthetic campaign; see `SyntheticSpec` for the model.

    Args:
        spec: sizes and knobs.
        seed: draws the truth, the reward model's scores and the raters.
    """

    def __init__(self, spec: SyntheticSpec, seed: int) -> None:
        self.spec = spec
        rng = np.random.default_rng(seed)
        n, k, sd = spec.n_items, spec.n_criteria, spec.quality_sd
        groups = np.arange(n) * spec.n_groups // n
        contexts = groups % spec.n_contexts
        share = spec.criteria_share if k else 0.0
        criteria = rng.standard_normal((n, k))
        base = rng.standard_normal(k)
        base /= max(np.linalg.norm(base), 1e-12)
        if spec.positive_weights:
            base = np.abs(base)
        directions = base + spec.context_spread * rng.standard_normal((spec.n_contexts, k)) / max(
            math.sqrt(k), 1.0
        )
        directions /= np.maximum(np.linalg.norm(directions, axis=1, keepdims=True), 1e-12)
        weights = directions * math.sqrt(share) * sd  # C x K
        residual = math.sqrt(1 - share) * sd * rng.standard_normal(n)
        if spec.positive_weights:
            # a context's spread may flip a small weight: kept positive
            weights = np.abs(weights)
        self.quality = np.einsum("nk,nk->n", weights[contexts], criteria) + residual
        self.criterion_values = criteria  # (n, K) the true criteria, unit scale
        lam = spec.rm_correlation / math.sqrt(share) if k else 0.0
        standard = lam * criteria + math.sqrt(1 - lam**2) * rng.standard_normal((n, k))
        self.rm_quality = np.einsum("nk,nk->n", weights[contexts], standard)
        # E[q | s] = w_k . (lam s) for unit-variance s: the weights the engine should recover
        self.true_weights = lam * weights if k else None
        offset, scale = rng.uniform(2, 8, k), rng.uniform(0.5, 2, k)
        scores = offset + scale * standard
        scores[rng.random((n, k)) < spec.missing_scores] = np.nan
        self.raters = RaterPool(spec.raters, rng)
        names = DEFAULT_CRITERIA if k == len(DEFAULT_CRITERIA) else tuple(f"c{i}" for i in range(k))
        self.problem = Problem(
            n_items=n,
            criteria=names,
            scores=scores if k else None,
            contexts=contexts,
            groups=groups,
            pair_scope=spec.pair_scope,
            tie_margin=spec.raters.tie_margin,
            both_threshold=spec.raters.both_threshold,
            candidates=candidate_pairs(groups, spec.pair_scope),
        )
        self.truth = (
            "the simulated true quality q = w_context . criteria + residual (JOD), drawn with "
            "the world's seed"
        )
        self.budget = None

    def shown_left(self, first: int, second: int, rng: np.random.Generator) -> int | None:
        if not self.raters.spec.sided:
            return None
        return first if rng.random() < 0.5 else second

    def answer_rating(self, item: int, rater: int, rng: np.random.Generator) -> tuple[int, int]:
        return self.raters.answer_rating(self.quality[item], rater, rng), rater

    def answer_criterion(
        self, first: int, second: int, criterion: str, rater: int, rng: np.random.Generator
    ) -> tuple[Outcome, int]:
        """(outcome of first vs second on `criterion`, by its true values; the rater).

        Raises:
            ValueError: a criterion the world does not have, or raters who answer none.
        """
        if criterion not in self.problem.criteria:
            raise ValueError(f"no criterion {criterion!r} in {list(self.problem.criteria)}")
        k = self.problem.criteria.index(criterion)
        values = self.criterion_values[:, k]
        return self.raters.answer_criterion(values[first], values[second], rater, rng), rater

    def answer_kset(
        self, items: tuple[int, ...], mode: str, rater: int, rng: np.random.Generator
    ) -> tuple[tuple[int, ...], int]:
        answer = self.raters.answer_kset(self.quality[list(items)], items, mode, rater, rng)
        return answer, rater

    def describe(self) -> dict[str, object]:
        return {"kind": "synthetic", "truth": self.truth, **self.spec.to_dict()}


@dataclass(frozen=True)
class GatedSpec:
    """A world whose true weights vary smoothly with the prompt's features (MATH.md §8's
    setting, with the truth not linear in them).

    Prompt g has features p_g ~ N(0, I_D / D) (|p| about 1) and true weights
    `w(p) = a (b + spread tanh(B p))`, b a unit vector, B ~ N(0, 1)^{K x D}, a set so that the
    criteria explain `criteria_share` of the quality variance over prompts; clip i of prompt g
    has `q_i = w(p_g) . c_i + u_i`, c_i ~ N(0, I_K). The reward model reports
    `s_i = lam c_i + sqrt(1 - lam^2) e_i` (then an affine map per criterion), lam =
    rm_correlation / sqrt(share), so `lam w(p)` are the weights of standardised scores the
    engine should recover. The first `n_prompts` prompts are rated; `n_held_out` more are
    never rated (their clips are `GatedWorld.held_out`). A campaign without a gate gets
    contexts by k-means of the features into `n_clusters` (held-out prompts: the nearest
    centre), the discrete stand-in an operator would use.

    Attributes:
        n_prompts, n_held_out, clips_per_prompt, n_criteria, feature_dim: sizes.
        spread: how far the weights turn with the features (0: the same everywhere).
        n_clusters: contexts made by clustering the features.
        rm_correlation, criteria_share, quality_sd: as in `SyntheticSpec`.
        raters: the rater population.
    """

    n_prompts: int = 60
    n_held_out: int = 40
    clips_per_prompt: int = 4
    n_criteria: int = 5
    feature_dim: int = 8
    spread: float = 1.0
    n_clusters: int = 4
    rm_correlation: float = 0.8
    criteria_share: float = 0.9
    quality_sd: float = 1.5
    raters: RaterSpec = field(default_factory=RaterSpec)

    def __post_init__(self) -> None:
        if self.n_prompts < 1 or self.n_held_out < 0 or self.clips_per_prompt < 2:
            raise ValueError("need n_prompts >= 1, n_held_out >= 0 and clips_per_prompt >= 2")
        if self.n_criteria < 1 or not 1 <= self.feature_dim <= 64:
            raise ValueError("need n_criteria >= 1 and 1 <= feature_dim <= 64")
        if not 1 <= self.n_clusters <= self.n_prompts:
            raise ValueError("need 1 <= n_clusters <= n_prompts")
        if not 0 < self.criteria_share <= 1 or self.quality_sd <= 0 or self.spread < 0:
            raise ValueError("need criteria_share in (0, 1], quality_sd > 0 and spread >= 0")
        if not 0 <= self.rm_correlation <= math.sqrt(self.criteria_share):
            raise ValueError("rm_correlation must be in [0, sqrt(criteria_share)]")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class HeldOut:
    """Clips of prompts no rater sees: what a campaign is told of them, and their truth.

    Attributes:
        scores: (m, K) raw scores; features: (m, D); contexts: (m,) cluster of each clip's
            prompt; groups: (m,) prompt ids, after the rated prompts'; quality: (m,) truth.
        rm_quality: (m,) `w(p) . s` with the true weights and the reward model's standardised
            scores: what a model that knew the weights could predict (a ceiling).
    """

    scores: np.ndarray
    features: np.ndarray
    contexts: np.ndarray
    groups: np.ndarray
    quality: np.ndarray
    rm_quality: np.ndarray


def cluster_features(
    features: np.ndarray, n_clusters: int, rng: np.random.Generator, n_iter: int = 50
) -> np.ndarray:
    """(C, D) k-means centres of the rows of `features` (Lloyd's iterations from distinct
    rows drawn by `rng`)."""
    centres = features[rng.choice(len(features), n_clusters, replace=False)].copy()
    for _ in range(n_iter):
        label = nearest_centre(features, centres)
        for c in range(n_clusters):
            if np.any(label == c):
                centres[c] = features[label == c].mean(0)
    return centres


def nearest_centre(features: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """(n,) the index of each row's nearest centre."""
    distance = ((features[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
    return distance.argmin(1)


class GatedWorld(PooledWorld):
    """A drawn `GatedSpec` world: rated prompts in `problem` (features and clustered
    contexts), never-rated ones in `held_out`.

    Args:
        spec: sizes and knobs.
        seed: draws the features, the weights, the clips, the scores and the raters.

    Attributes:
        prompt_features: (G, D) every prompt's features, rated ones first.
        prompt_weights: (G, K) `lam w(p_g)`, the standardised scores' true weights.
        held_out: the never-rated prompts' clips.
    """

    def __init__(self, spec: GatedSpec, seed: int) -> None:
        self.spec = spec
        rng = np.random.default_rng(seed)
        k, d, m = spec.n_criteria, spec.feature_dim, spec.clips_per_prompt
        n_prompts = spec.n_prompts + spec.n_held_out
        features = rng.standard_normal((n_prompts, d)) / math.sqrt(d)
        base = rng.standard_normal(k)
        base /= np.linalg.norm(base)
        turn = rng.standard_normal((k, d))
        raw_weights = base + spec.spread * np.tanh(features @ turn.T)  # G x K
        size = math.sqrt(spec.criteria_share) * spec.quality_sd
        weights = raw_weights * size / math.sqrt(np.mean((raw_weights**2).sum(1)))
        group = np.repeat(np.arange(n_prompts), m)
        criteria = rng.standard_normal((len(group), k))
        residual = math.sqrt(1 - spec.criteria_share) * spec.quality_sd
        quality = np.einsum("nk,nk->n", weights[group], criteria)
        quality = quality + residual * rng.standard_normal(len(group))
        lam = spec.rm_correlation / math.sqrt(spec.criteria_share)
        standard = lam * criteria + math.sqrt(1 - lam**2) * rng.standard_normal(criteria.shape)
        offset, scale = rng.uniform(2, 8, k), rng.uniform(0.5, 2, k)
        scores = offset + scale * standard
        rated = group < spec.n_prompts
        centres = cluster_features(features[: spec.n_prompts], spec.n_clusters, rng)
        context = nearest_centre(features, centres)[group]
        self.prompt_features = features
        self.prompt_weights = lam * weights
        self.quality = quality[rated]
        self.true_weights = None  # by prompt, not by context: `prompt_weights`
        self.raters = RaterPool(spec.raters, rng)
        names = DEFAULT_CRITERIA if k == len(DEFAULT_CRITERIA) else tuple(f"c{i}" for i in range(k))
        self.problem = Problem(
            n_items=int(rated.sum()),
            criteria=names,
            scores=scores[rated],
            contexts=context[rated],
            groups=group[rated],
            pair_scope="group",
            tie_margin=spec.raters.tie_margin,
            both_threshold=spec.raters.both_threshold,
            candidates=candidate_pairs(group[rated], "group"),
            features=features[group[rated]],
        )
        rm_quality = np.einsum("nk,nk->n", weights[group], standard)
        held = ~rated
        self.held_out = HeldOut(
            scores[held],
            features[group[held]],
            context[held],
            group[held],
            quality[held],
            rm_quality[held],
        )
        self.truth = (
            "the simulated true quality q = w(p) . criteria + residual (JOD), the weights a "
            "smooth function of the prompt's features, drawn with the world's seed"
        )
        self.budget = None

    def describe(self) -> dict[str, object]:
        return {"kind": "gated", "truth": self.truth, **self.spec.to_dict()}


@dataclass(frozen=True)
class Comparisons:
    """Recorded pairwise judgments, items named and indexed.

    Attributes:
        items: (n,) item names; groups: (n,) group name per item ('' when ungrouped).
        first, second: (m,) item indices; outcome: per comparison, of first vs second.
        rater: (m,) rater names.
    """

    items: tuple[str, ...]
    groups: tuple[str, ...]
    first: np.ndarray
    second: np.ndarray
    outcome: tuple[Outcome, ...]
    rater: tuple[str, ...]


_CHOICES = {
    "1": Outcome.WIN,
    "true": Outcome.WIN,
    "a": Outcome.WIN,
    "first": Outcome.WIN,
    "0": Outcome.LOSS,
    "false": Outcome.LOSS,
    "b": Outcome.LOSS,
    "second": Outcome.LOSS,
    "tie": Outcome.TIE,
    "0.5": Outcome.TIE,
}


def load_comparisons(
    path: str | Path,
    *,
    rater: str = "observer",
    first: str = "condition_A",
    second: str = "condition_B",
    choice: str = "is_A_selected",
    group: str | None = "scene",
) -> Comparisons:
    """Read a CSV of pairwise judgments (one row per judgment).

    `choice` holds 1/true/A/first (the first item won), 0/false/B/second, or tie/0.5. Items in
    different groups are different items: "scene/condition" with the default columns.

    Raises:
        ValueError: a missing column, an unknown choice, an item compared with itself, or no rows.
    """
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"{path}: no comparisons")
    needed = [rater, first, second, choice] + ([group] if group else [])
    missing = [c for c in needed if c not in rows[0]]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; columns are {list(rows[0])}")
    index: dict[tuple[str, str], int] = {}
    pairs, outcomes, raters = [], [], []
    for line, row in enumerate(rows, start=2):
        scope = row[group] if group else ""
        key = row[choice].strip().lower()
        if key not in _CHOICES:
            raise ValueError(f"{path}:{line}: unknown choice {row[choice]!r}")
        a, b = (index.setdefault((scope, row[c]), len(index)) for c in (first, second))
        if a == b:
            raise ValueError(f"{path}:{line}: an item is compared with itself")
        pairs.append((a, b))
        outcomes.append(_CHOICES[key])
        raters.append(row[rater])
    names = tuple(f"{g}/{c}" if group else c for g, c in index)
    array = np.array(pairs, dtype=np.int64)
    return Comparisons(
        items=names,
        groups=tuple(g for g, _ in index),
        first=array[:, 0],
        second=array[:, 1],
        outcome=tuple(outcomes),
        rater=tuple(raters),
    )


class ReplayWorld(World):
    """Recorded comparisons as a world: only logged pairs can be asked, each answer once.

    A strategy asking pair (i, j) receives one of the recorded answers for that pair, drawn
    without replacement in an order fixed by the seed; a pair with no answer left cannot be
    asked. The truth is the MAP Thurstone fit (sim.estimators, JOD) of the whole log.

    Args:
        data: the recorded comparisons.
        seed: the order in which each pair's recorded answers are handed out.
    """

    def __init__(self, data: Comparisons, seed: int, name: str = "recorded") -> None:
        rng = np.random.default_rng(seed)
        n = len(data.items)
        group_codes = {g: i for i, g in enumerate(dict.fromkeys(data.groups))}
        groups = np.array([group_codes[g] for g in data.groups], dtype=np.int64)
        low = np.minimum(data.first, data.second)
        high = np.maximum(data.first, data.second)
        self.candidates = np.unique(np.stack((low, high), axis=1), axis=0)
        slot = {(int(i), int(j)): p for p, (i, j) in enumerate(self.candidates)}
        answers: dict[int, list[tuple[Outcome, str]]] = defaultdict(list)
        flip = {Outcome.WIN: Outcome.LOSS, Outcome.LOSS: Outcome.WIN, Outcome.TIE: Outcome.TIE}
        for a, b, outcome, who in zip(
            data.first, data.second, data.outcome, data.rater, strict=True
        ):
            # stored as the outcome of the lower index against the higher
            answers[slot[(min(a, b), max(a, b))]].append((outcome if a < b else flip[outcome], who))
        self.answers_ = {p: [a[k] for k in rng.permutation(len(a))] for p, a in answers.items()}
        self.remaining_ = np.array([len(self.answers_[p]) for p in range(len(self.candidates))])
        self.rater_names = tuple(dict.fromkeys(data.rater))
        self._rater_index: dict[Hashable, int] = {r: i for i, r in enumerate(self.rater_names)}
        scope = "group" if len(group_codes) > 1 else "any"
        ties = any(o is Outcome.TIE for o in data.outcome)
        counts = win_counts(n, data.first, data.second, outcome_signs(list(data.outcome)))
        self.quality = fit_thurstone(counts, with_cov=False).mean
        self.true_weights = None
        self.problem = Problem(
            n_items=n,
            criteria=(),
            scores=None,
            contexts=np.zeros(n, dtype=np.int64),
            groups=groups,
            pair_scope=scope,
            tie_margin=0.5 if ties else 0.0,
            candidates=self.candidates,
        )
        self.name = name
        self.n_comparisons = len(data.outcome)
        self.truth = (
            f"the MAP Thurstone fit (JOD, sigma 1.4826, prior sd 3) of all {self.n_comparisons} "
            f"recorded comparisons of {name}"
        )
        self.budget = self.n_comparisons
        self.items = data.items

    def available(self, pending: np.ndarray) -> np.ndarray:
        return self.remaining_ - pending > 0

    def answer_pair(
        self,
        first: int,
        second: int,
        rater: int,
        rng: np.random.Generator,
        left: int | None = None,
    ) -> tuple[Outcome, int]:
        """Pop one recorded answer for the pair (in the asked order); `rater` is ignored, the
        recorded rater is returned.

        Raises:
            LookupError: the log holds no (further) answer for this pair.
        """
        low, high = min(first, second), max(first, second)
        row = np.searchsorted(self.candidates[:, 0], low, side="left")
        hits = np.nonzero((self.candidates[row:, 0] == low) & (self.candidates[row:, 1] == high))[0]
        if not hits.size or self.remaining_[row + hits[0]] == 0:
            raise LookupError(f"the log holds no answer left for pair ({first}, {second})")
        slot = int(row + hits[0])
        outcome, who = self.answers_[slot][len(self.answers_[slot]) - self.remaining_[slot]]
        self.remaining_[slot] -= 1
        if first > second:
            outcome = {Outcome.WIN: Outcome.LOSS, Outcome.LOSS: Outcome.WIN}.get(outcome, outcome)
        return outcome, self._rater_index[who]

    def describe(self) -> dict[str, object]:
        return {
            "kind": "replay",
            "name": self.name,
            "truth": self.truth,
            "n_items": self.problem.n_items,
            "n_comparisons": self.n_comparisons,
            "n_pairs": len(self.candidates),
            "pair_scope": self.problem.pair_scope,
        }


__all__ = [
    "Comparisons",
    "GatedSpec",
    "GatedWorld",
    "HeldOut",
    "PooledWorld",
    "Problem",
    "ReplayWorld",
    "SyntheticSpec",
    "SyntheticWorld",
    "World",
    "candidate_pairs",
    "cluster_features",
    "load_comparisons",
    "nearest_centre",
]
