"""Pair-selection strategies: the engine's and the baselines it is measured against.

Every strategy sees only the `Problem` (never the truth). The runner asks it for a pair for a
rater (`propose`), possibly several times before any answer comes back (raters work at once,
so earlier pairs are pending), and hands it each answer (`observe`). `available` is None when
any candidate may be asked, else a (P,) mask over `problem.candidates` (a replay can only ask
pairs with a recorded answer left). Registered in `STRATEGIES`, by name.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar, Protocol
from warnings import WarningMessage

import numpy as np
import torch
from botorch.acquisition.preference import AnalyticExpectedUtilityOfBestOption
from botorch.exceptions.errors import ModelFittingError
from botorch.exceptions.warnings import OptimizationWarning
from botorch.fit import fit_gpytorch_mll
from botorch.models.pairwise_gp import PairwiseGP, PairwiseLaplaceMarginalLogLikelihood
from linear_operator.utils.errors import NotPSDError

from engine import Judgment, Outcome, SideBias, predict_pair
from sim.campaigns import LAPSE_PRIOR, build_campaign, refit_schedule
from sim.worlds import Problem, candidate_pairs

ELO_K = 24.0  # Elo step in Elo points per game: the common chess/Arena-leaderboard value
ELO_SCALE = 400.0  # Elo points per factor 10 in odds
EUBO_MAX_ITEMS = 60  # PairwiseGP is O(n^3) per Laplace step and EUBO scores O(n^2) pairs
REFIT_EVERY = 20  # decisive labels between PairwiseGP hyperparameter fits


class Strategy(Protocol):
    """Chooses the next pair for a rater and learns from the answers."""

    name: ClassVar[str]

    def propose(self, rater: int, available: np.ndarray | None) -> tuple[int, int]:
        """The next pair (i, j) to hand to `rater`, one of `problem.candidates`."""
        ...

    def observe(
        self, first: int, second: int, outcome: Outcome, rater: int, left: int | None = None
    ) -> None:
        """The answer to a pair this strategy proposed (outcome of first vs second), `left`
        the clip the page showed on the left (None where the world draws no side)."""
        ...


def _allowed(problem: Problem, available: np.ndarray | None) -> np.ndarray:
    """(P,) candidate indices that may be asked."""
    if available is None:
        return np.arange(len(problem.candidates))
    allowed = np.flatnonzero(available)
    if not allowed.size:
        raise LookupError("no candidate pair is available")
    return allowed


class _PendingPairs:
    """Pairs handed out and not yet answered, as candidate indices."""

    def __init__(self, problem: Problem) -> None:
        n = problem.n_items
        self._slot = np.full((n, n), -1, dtype=np.int64)
        first, second = problem.candidates.T
        self._slot[first, second] = self._slot[second, first] = np.arange(len(first))
        self.count = np.zeros(len(first), dtype=np.int64)

    def slot(self, first: int, second: int) -> int:
        return int(self._slot[first, second])

    def slots(self, first: int, seconds: np.ndarray) -> np.ndarray:
        return self._slot[first, seconds]

    def add(self, first: int, second: int) -> None:
        self.count[self.slot(first, second)] += 1

    def remove(self, first: int, second: int) -> None:
        self.count[self.slot(first, second)] -= 1


class RandomPairs:
    """Uniformly random candidate pairs: the classic study's design."""

    name: ClassVar[str] = "random"

    def __init__(self, problem: Problem, seed: int) -> None:
        self.problem = problem
        self.rng_ = np.random.default_rng(seed)

    def propose(self, rater: int, available: np.ndarray | None) -> tuple[int, int]:
        allowed = _allowed(self.problem, available)
        i, j = self.problem.candidates[allowed[self.rng_.integers(allowed.size)]]
        return int(i), int(j)

    def observe(
        self, first: int, second: int, outcome: Outcome, rater: int, left: int | None = None
    ) -> None:
        pass


class RoundRobin:
    """The full design: every candidate pair once per round, in a fresh random order each round."""

    name: ClassVar[str] = "round_robin"

    def __init__(self, problem: Problem, seed: int) -> None:
        self.problem = problem
        self.rng_ = np.random.default_rng(seed)
        self.queue_: deque[int] = deque()

    def propose(self, rater: int, available: np.ndarray | None) -> tuple[int, int]:
        for _ in range(2):
            while self.queue_:
                slot = self.queue_.popleft()
                if available is None or available[slot]:
                    i, j = self.problem.candidates[slot]
                    return int(i), int(j)
            self.queue_.extend(self.rng_.permutation(_allowed(self.problem, available)).tolist())
        raise LookupError("no candidate pair is available")

    def observe(
        self, first: int, second: int, outcome: Outcome, rater: int, left: int | None = None
    ) -> None:
        pass


class NearestMeans:
    """Swiss-system / Elo-style close matches.

    Keeps Elo ratings (its own, model-free state); hands out the least-played clip that still
    has an available partner, against the partner with the closest rating (fewest games breaks
    ties), avoiding pairs pending elsewhere while any other is left.
    """

    name: ClassVar[str] = "nearest_means"

    def __init__(self, problem: Problem, seed: int) -> None:
        self.problem = problem
        self.rng_ = np.random.default_rng(seed)
        self.rating_ = np.zeros(problem.n_items)
        self.games_ = np.zeros(problem.n_items)
        self.pending_ = _PendingPairs(problem)
        first, second = problem.candidates.T
        self.partners_ = [
            np.concatenate((second[first == k], first[second == k])) for k in range(problem.n_items)
        ]

    def propose(self, rater: int, available: np.ndarray | None) -> tuple[int, int]:
        if available is None:
            return self._propose_open()
        allowed = _allowed(self.problem, available)
        free = allowed[self.pending_.count[allowed] == 0]
        slots = free if free.size else allowed
        first, second = self.problem.candidates[slots].T
        # least-played clip first, then the closest rating, then the fewest games; random jitter
        # breaks exact ties without favouring low indices
        least = np.minimum(self.games_[first], self.games_[second])
        gap = np.abs(self.rating_[first] - self.rating_[second])
        jitter = self.rng_.random(slots.size)
        order = np.lexsort((jitter, self.games_[first] + self.games_[second], gap, least))
        i, j = int(first[order[0]]), int(second[order[0]])
        self.pending_.add(i, j)
        return i, j

    def _propose_open(self) -> tuple[int, int]:
        """The same rule in O(n) when every candidate is open: the least-played clip, then its
        closest-rated partner (pairs pending elsewhere last)."""
        n = self.problem.n_items
        jitter = self.rng_.random(n)
        i = int(np.lexsort((jitter, self.games_))[0])
        partners = self.partners_[i]
        busy = self.pending_.count[self.pending_.slots(i, partners)] > 0
        gap = np.abs(self.rating_[partners] - self.rating_[i])
        order = np.lexsort((jitter[partners], self.games_[partners], gap, busy))
        j = int(partners[order[0]])
        i, j = min(i, j), max(i, j)
        self.pending_.add(i, j)
        return i, j

    def observe(
        self, first: int, second: int, outcome: Outcome, rater: int, left: int | None = None
    ) -> None:
        self.pending_.remove(first, second)
        expected = 1.0 / (1.0 + 10.0 ** ((self.rating_[second] - self.rating_[first]) / ELO_SCALE))
        score = {Outcome.WIN: 1.0, Outcome.TIE: 0.5, Outcome.LOSS: 0.0}[outcome]
        self.rating_[first] += ELO_K * (score - expected)
        self.rating_[second] -= ELO_K * (score - expected)
        self.games_[[first, second]] += 1


class ArenaSampling:
    """Chatbot Arena's active sampling (Chiang et al. 2024, §5):
    `P(pair a) ∝ sqrt(S_a / n_a) - sqrt(S_a / (n_a + 1))`, the expected shrinkage of the pair's
    confidence interval from one more vote.

    S_a is the variance of one vote on the pair, `p_a (1 - p_a)`, with p_a the pair's smoothed
    win rate (wins + 1) / (n_a + 2); n_a counts answered and pending votes, plus one so that an
    unseen pair has a finite, largest weight.
    """

    name: ClassVar[str] = "arena"

    def __init__(self, problem: Problem, seed: int) -> None:
        self.problem = problem
        self.rng_ = np.random.default_rng(seed)
        self.pending_ = _PendingPairs(problem)
        self.votes_ = np.zeros(len(problem.candidates))
        self.wins_ = np.zeros(len(problem.candidates))

    def propose(self, rater: int, available: np.ndarray | None) -> tuple[int, int]:
        allowed = _allowed(self.problem, available)
        votes = self.votes_[allowed] + self.pending_.count[allowed] + 1
        rate = (self.wins_[allowed] + 1) / (self.votes_[allowed] + 2)
        variance = rate * (1 - rate)
        shrink = np.sqrt(variance / votes) - np.sqrt(variance / (votes + 1))
        slot = allowed[self.rng_.choice(allowed.size, p=shrink / shrink.sum())]
        i, j = self.problem.candidates[slot]
        self.pending_.add(int(i), int(j))
        return int(i), int(j)

    def observe(
        self, first: int, second: int, outcome: Outcome, rater: int, left: int | None = None
    ) -> None:
        self.pending_.remove(first, second)
        slot = self.pending_.slot(first, second)
        low_won = {Outcome.WIN: 1.0, Outcome.TIE: 0.5, Outcome.LOSS: 0.0}[outcome]
        self.votes_[slot] += 1
        self.wins_[slot] += low_won if first < second else 1 - low_won


class _EngineBacked:
    """Shared plumbing of the strategies that read the engine's posterior.

    Class switches: `reward_model` (the reward-model prior), `empirical_bayes` (refit the
    prior scales at the label counts of `sim.campaigns.refit_schedule`), `reliability` (learn
    each rater's noise and lapse rate, and choose and update with who answers; otherwise
    every label is anonymous with the default noise), `structure` (how the posterior is
    kept: engine.forms).
    """

    reward_model: ClassVar[bool] = True
    empirical_bayes: ClassVar[bool] = False
    reliability: ClassVar[bool] = False
    structure: ClassVar[str] = "dense"
    side_bias: ClassVar[bool] = False
    feature_gate: ClassVar[bool] = False  # weights gated by the prompt's features
    contexts: ClassVar[bool] = True  # the problem's contexts (off: one context)

    def __init__(self, problem: Problem, seed: int) -> None:
        self.problem = problem
        self.generator_ = torch.Generator().manual_seed(seed)
        self.campaign_ = build_campaign(
            problem,
            reward_model=self.reward_model,
            lapse_prior=LAPSE_PRIOR if self.reliability else None,
            learn_rater_noise=self.reliability,
            refit_prior_at=refit_schedule(problem.n_items) if self.empirical_bayes else (),
            structure=self.structure,
            side_bias=SideBias() if self.side_bias else None,
            # the raters' "both good" and "both bad", read as the world defines them
            both_threshold=problem.both_threshold,
            feature_gate=self.feature_gate,
            contexts=self.contexts,
        )

    def rater_key(self, rater: int) -> int | None:
        """Who the engine is told answers: the rater when reliability or side offsets are
        learned."""
        return rater if self.reliability or self.side_bias else None

    def observe(
        self, first: int, second: int, outcome: Outcome, rater: int, left: int | None = None
    ) -> None:
        judgment = Judgment.pair(self.rater_key(rater), first, second, outcome, left=left)
        self.campaign_.observe([judgment])


class InformationGain(_EngineBacked):
    """The engine: the pair of largest expected information gain (MATH.md §3), pending pairs
    counted by the believer shrink (MATH.md §4), with the reward-model prior."""

    name: ClassVar[str] = "information_gain"

    def __init__(self, problem: Problem, seed: int) -> None:
        super().__init__(problem, seed)
        self.tasks_: dict[tuple[int, int], deque[int]] = defaultdict(deque)
        # pairs the engine's scope allows but the world never can (a log that skipped them)
        n = problem.n_items
        in_scope = candidate_pairs(problem.groups, problem.pair_scope)
        # pairs as keys i n + j: a lookup in the world's candidates, no n x n table
        known = problem.candidates[:, 0] * n + problem.candidates[:, 1]
        self.outside_ = in_scope[~np.isin(in_scope[:, 0] * n + in_scope[:, 1], known)]

    def propose(self, rater: int, available: np.ndarray | None) -> tuple[int, int]:
        forbidden = self.outside_
        if available is not None:
            _allowed(self.problem, available)
            forbidden = np.concatenate((forbidden, self.problem.candidates[~available]))
        forbidden = torch.from_numpy(forbidden) if len(forbidden) else None
        task = self.campaign_.next_pairs(
            self.rater_key(rater),
            repeat_pairs=True,
            forbidden_pairs=forbidden,
            generator=self.generator_,
        )[0]
        self.tasks_[(task.first, task.second)].append(task.id)
        return task.first, task.second

    def observe(
        self, first: int, second: int, outcome: Outcome, rater: int, left: int | None = None
    ) -> None:
        task_id = self.tasks_[(first, second)].popleft()
        judgment = Judgment.pair(self.rater_key(rater), first, second, outcome, left=left)
        self.campaign_.observe([judgment], [task_id])


class InformationGainBlocks(InformationGain):
    """The engine with its posterior kept in prompt blocks (engine.structured): the same
    posterior and choices as `information_gain`, at O(n) memory; same-prompt scope only."""

    name: ClassVar[str] = "information_gain_blocks"
    structure: ClassVar[str] = "blocks"


class InformationGainFactorised(InformationGain):
    """The engine with the factorised block form (engine.neighbours): each prompt independent
    of the others given the weights, candidates from neighbours in posterior-mean order; the
    approximation that takes pair_scope="any" past the dense form's limit."""

    name: ClassVar[str] = "information_gain_factorised"
    structure: ClassVar[str] = "factorised"


class InformationGainNoPrior(InformationGain):
    """The engine's information gain without the reward model (clips start exchangeable)."""

    name: ClassVar[str] = "information_gain_no_rm"
    reward_model: ClassVar[bool] = False


class InformationGainEB(InformationGain):
    """The engine with its prior scales learned by empirical Bayes as labels arrive."""

    name: ClassVar[str] = "information_gain_eb"
    empirical_bayes: ClassVar[bool] = True


class InformationGainNoPriorEB(InformationGainNoPrior):
    """The engine without the reward model, its residual scale learned by empirical Bayes."""

    name: ClassVar[str] = "information_gain_no_rm_eb"
    empirical_bayes: ClassVar[bool] = True


class InformationGainReliable(InformationGain):
    """The engine that learns each rater's noise and lapse rate (flagging random clickers) and
    picks each pair for the rater who will answer it."""

    name: ClassVar[str] = "information_gain_reliable"
    reliability: ClassVar[bool] = True


class InformationGainSide(InformationGain):
    """The engine learning each rater's side offset from the side each pair was shown on
    (engine.position)."""

    name: ClassVar[str] = "information_gain_side"
    side_bias: ClassVar[bool] = True


class InformationGainGated(InformationGain):
    """The engine with its weights gated by the prompt's feature vector, `w(p) = w + W p`
    (engine.gating, MATH.md §8), instead of the problem's contexts."""

    name: ClassVar[str] = "information_gain_gated"
    feature_gate: ClassVar[bool] = True
    contexts: ClassVar[bool] = False


class InformationGainGlobal(InformationGain):
    """The engine with one set of weights for every prompt: no contexts, no gate."""

    name: ClassVar[str] = "information_gain_global"
    contexts: ClassVar[bool] = False


class PredictiveUncertainty(_EngineBacked):
    """Uncertainty sampling: the pair whose outcome the engine's posterior predicts least
    surely (largest predictive entropy H[y], not the information gain), skipping pending pairs
    while others are left."""

    name: ClassVar[str] = "uncertainty"

    def __init__(self, problem: Problem, seed: int) -> None:
        super().__init__(problem, seed)
        self.pending_ = _PendingPairs(problem)
        self.first_ = torch.from_numpy(problem.candidates[:, 0])
        self.second_ = torch.from_numpy(problem.candidates[:, 1])

    def propose(self, rater: int, available: np.ndarray | None) -> tuple[int, int]:
        allowed = _allowed(self.problem, available)
        free = allowed[self.pending_.count[allowed] == 0]
        slots = torch.from_numpy(free if free.size else allowed)
        campaign = self.campaign_
        noise_var = campaign.noise_sd(None) ** 2
        probabilities = predict_pair(
            campaign.posterior,
            self.first_[slots],
            self.second_[slots],
            noise_var,
            campaign.pair_cuts,
        )  # P x outcomes
        entropy = -(probabilities * probabilities.clamp_min(1e-300).log()).sum(-1)
        slot = int(slots[int(torch.argmax(entropy))])
        i, j = (int(v) for v in self.problem.candidates[slot])
        self.pending_.add(i, j)
        return i, j

    def observe(
        self, first: int, second: int, outcome: Outcome, rater: int, left: int | None = None
    ) -> None:
        self.pending_.remove(first, second)
        super().observe(first, second, outcome, rater, left)


@contextmanager
def _numpy_global_seed(seed: int) -> Iterator[None]:
    """Seed numpy's legacy global RNG inside the block, then restore the caller's state.

    PairwiseGP's first Laplace step jitters its starting point with `np.random`; this makes
    that one draw reproducible without disturbing anyone else.
    """
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _optimizer_stop(message: WarningMessage) -> bool:
    """Accept L-BFGS-B's end point whatever made it stop; other warnings fail the fit."""
    return issubclass(message.category, OptimizationWarning)


class EUBO:
    """Expected utility of the best option, E[max(f_i, f_j)] (Lin et al. 2022, "Preference
    Exploration for Efficient Bayesian Optimization with Multiple Outcomes", AISTATS:
    analytic EUBO) on botorch's `PairwiseGP`, a probit preference GP fitted by Laplace.

    `PairwiseGP` takes datapoints (n, d), a feature row per clip, and comparisons (m, 2) of
    [winner, loser] row indices. A clip's features: a one-hot identity block (n dims), so
    every clip can be told apart, then, with a reward model, its scores standardised per
    criterion (missing = 0, the mean) and min-max scaled to [0, 1], since the default
    kernel (ARD RBF, lengthscale prior Gamma(2.4, 2.7), mode 0.52) assumes unit-cube inputs;
    distinct one-hot rows are then nearly independent a priori unless their scores are
    close. `PairwiseGP` has no tie likelihood: a TIE is skipped. Hyperparameters are fitted
    (MAP, one deterministic L-BFGS-B run, no random restarts) at the first decisive label
    and then every `REFIT_EVERY`; in between, new data reuse them; a failed fit keeps the
    previous ones. The next pair is the allowed candidate of largest EUBO, pairs pending
    elsewhere skipped while others are left; a uniformly random one before any decisive
    label. EUBO hunts the best clip (it mostly pits the leader against the least known), not
    a full ranking. Only for n <= `EUBO_MAX_ITEMS`.
    """

    name: ClassVar[str] = "eubo"

    def __init__(self, problem: Problem, seed: int) -> None:
        if problem.n_items > EUBO_MAX_ITEMS:
            raise ValueError(
                f"eubo supports at most {EUBO_MAX_ITEMS} clips, got {problem.n_items} "
                "(PairwiseGP is cubic in the clips and EUBO scores every candidate pair)"
            )
        self.problem = problem
        self.rng_ = np.random.default_rng(seed)
        self.numpy_seed_ = int(self.rng_.integers(2**32))
        self.pending_ = _PendingPairs(problem)
        blocks = [np.eye(problem.n_items)]
        if problem.scores is not None:
            present = ~np.isnan(problem.scores)
            values = np.where(present, problem.scores, 0.0)
            centred = np.where(present, values - values.sum(0) / np.maximum(present.sum(0), 1), 0)
            span = np.ptp(centred, 0)  # min-max of the centred = of the standardised scores
            blocks.append((centred - centred.min(0)) / np.where(span > 0, span, 1.0))
        self.features_ = torch.from_numpy(np.hstack(blocks))  # float64
        self.wins_: list[tuple[int, int]] = []  # decisive labels as (winner, loser)
        self.model_: PairwiseGP | None = None
        self.fitted_at_ = 0  # decisive labels at the last hyperparameter fit
        self.stale_ = False

    def _model(self) -> PairwiseGP | None:
        """The GP on every decisive label so far (None before the first)."""
        if not self.stale_:
            return self.model_
        comparisons = torch.tensor(self.wins_)
        with _numpy_global_seed(self.numpy_seed_):
            if self.model_ is None:
                self.model_ = PairwiseGP(self.features_, comparisons)
            else:
                self.model_.set_train_data(self.features_, comparisons, update_model=True)
            if not self.fitted_at_ or len(self.wins_) - self.fitted_at_ >= REFIT_EVERY:
                self.fitted_at_ = len(self.wins_)
                mll = PairwiseLaplaceMarginalLogLikelihood(self.model_.likelihood, self.model_)
                try:
                    fit_gpytorch_mll(mll, max_attempts=1, warning_handler=_optimizer_stop)
                except (ModelFittingError, NotPSDError):
                    # hyperparameters rolled back: redo the Laplace step under them
                    self.model_.set_train_data(self.features_, comparisons, update_model=True)
        self.model_.eval()
        self.stale_ = False
        return self.model_

    def utility(self) -> np.ndarray:
        """(n,) posterior mean utility per clip (zeros before any decisive label)."""
        model = self._model()
        if model is None:
            return np.zeros(self.problem.n_items)
        with torch.no_grad():
            return model.posterior(self.features_).mean.squeeze(-1).numpy()

    def propose(self, rater: int, available: np.ndarray | None) -> tuple[int, int]:
        allowed = _allowed(self.problem, available)
        free = allowed[self.pending_.count[allowed] == 0]
        slots = free if free.size else allowed
        model = self._model()
        if model is None:
            slot = slots[self.rng_.integers(slots.size)]
        else:
            pairs = self.features_[torch.from_numpy(self.problem.candidates[slots])]  # P x 2 x d
            with torch.no_grad():
                value = AnalyticExpectedUtilityOfBestOption(pref_model=model)(pairs)
            slot = slots[int(torch.argmax(value))]
        i, j = (int(v) for v in self.problem.candidates[slot])
        self.pending_.add(i, j)
        return i, j

    def observe(
        self, first: int, second: int, outcome: Outcome, rater: int, left: int | None = None
    ) -> None:
        self.pending_.remove(first, second)
        if outcome != Outcome.TIE:
            self.wins_.append((first, second) if outcome == Outcome.WIN else (second, first))
            self.stale_ = True


STRATEGIES: dict[str, type] = {
    "information_gain": InformationGain,
    "information_gain_blocks": InformationGainBlocks,
    "information_gain_factorised": InformationGainFactorised,
    "information_gain_no_rm": InformationGainNoPrior,
    "information_gain_eb": InformationGainEB,
    "information_gain_no_rm_eb": InformationGainNoPriorEB,
    "information_gain_reliable": InformationGainReliable,
    "information_gain_side": InformationGainSide,
    "information_gain_gated": InformationGainGated,
    "information_gain_global": InformationGainGlobal,
    "random": RandomPairs,
    "round_robin": RoundRobin,
    "nearest_means": NearestMeans,
    "uncertainty": PredictiveUncertainty,
    "arena": ArenaSampling,
    "eubo": EUBO,
}


def make_strategy(name: str, problem: Problem, seed: int) -> Strategy:
    """The registered strategy `name` for this problem.

    Raises:
        KeyError: an unknown name (the message lists the known ones).
    """
    if name not in STRATEGIES:
        raise KeyError(f"unknown strategy {name!r}; known: {sorted(STRATEGIES)}")
    return STRATEGIES[name](problem, seed)


__all__ = [
    "EUBO",
    "STRATEGIES",
    "ArenaSampling",
    "InformationGain",
    "InformationGainBlocks",
    "InformationGainGated",
    "InformationGainGlobal",
    "InformationGainNoPrior",
    "InformationGainSide",
    "NearestMeans",
    "PredictiveUncertainty",
    "RandomPairs",
    "RoundRobin",
    "Strategy",
    "make_strategy",
]
