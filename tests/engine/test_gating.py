"""Prompt-feature gating (engine.gating, docs/MATH.md §8): vec(W) as a border block in both
posterior forms, one-hot features as contexts, one ADF step against independent references,
replay, read-outs and bad input."""

from __future__ import annotations

import math

import pytest
import torch

from engine import Campaign, CampaignConfig, Judgment, PriorScales
from engine.blocks import GATE, WEIGHTS, context_block
from engine.gating import gate_loadings
from tests.engine.reference import sampled_tilted_moments, tilted_moments

SEED = 0
ATOL = 1e-9
CRITERIA = ("a", "b", "c")
SCALES = PriorScales(weight_scale=0.6, context_scale=0.3, residual_scale=1.0, gate_scale=0.4)
THRESHOLDS = (-0.5, 0.5)


def _campaign(structure: str, feature_dim: int, scales: PriorScales = SCALES) -> Campaign:
    config = CampaignConfig(
        criteria=CRITERIA,
        prior=scales,
        pair_scope="group",
        structure=structure,  # type: ignore[arg-type]
        feature_dim=feature_dim,
        tie_margin=0.3,
        emoji_thresholds=THRESHOLDS,
    )
    return Campaign(config, device="cpu", dtype=torch.float64)


def _labels(generator: torch.Generator, n_groups: int, size: int, count: int) -> list[Judgment]:
    """Pairs within groups (win, loss, tie) and emoji ratings, at random."""
    labels = []
    for _ in range(count):
        group = int(torch.randint(n_groups, (1,), generator=generator))
        first, second = (torch.randperm(size, generator=generator)[:2] + group * size).tolist()
        kind = int(torch.randint(4, (1,), generator=generator))
        noise = 0.5 + float(torch.rand(1, generator=generator))
        if kind == 3:
            level = int(torch.randint(3, (1,), generator=generator))
            labels.append(Judgment.rating("r", first, level, noise_sd=noise))
        else:
            outcome = ("win", "loss", "tie")[kind]
            labels.append(Judgment.pair("r", first, second, outcome, noise_sd=noise))
    return labels


def _featured_campaign(structure: str) -> Campaign:
    """6 prompts of 3 clips, 2 contexts, D = 4 features per prompt, missing scores, labels,
    then a prompt added after them and more labels."""
    generator = torch.Generator().manual_seed(SEED)
    campaign = _campaign(structure, feature_dim=4)
    scores = torch.randn(18, 3, generator=generator)
    scores[2, 1] = scores[7, 0] = math.nan
    prompts = torch.randn(6, 4, generator=generator)
    groups = [i // 3 for i in range(18)]
    contexts = ["x" if g < 3 else "y" for g in groups]
    campaign.add_clips(scores, groups=groups, contexts=contexts, features=prompts[groups])
    campaign.observe(_labels(generator, 6, 3, 25))
    late = torch.randn(1, 4, generator=generator).repeat(3, 1)
    campaign.add_clips(torch.randn(3, 3, generator=generator), groups=[6] * 3, features=late)
    campaign.observe(_labels(generator, 7, 3, 15))
    return campaign


@pytest.mark.parametrize("structure", ["blocks", "factorised"])
def test_block_form_equals_dense_form_with_features(structure: str) -> None:
    """MATH.md §8 (b): the gate as a local border block keeps the block form exact."""
    dense = _featured_campaign("dense").posterior
    blocks = _featured_campaign(structure).posterior
    assert dense.extra == blocks.extra == ((GATE, 12),)
    assert torch.allclose(dense.mean, blocks.mean, atol=ATOL, rtol=0)
    assert torch.allclose(dense.cov, blocks.cov, atol=ATOL, rtol=0)
    # the labels taught the gate something
    gate_mean, gate_cov = dense.block(GATE)
    assert float(gate_mean.abs().max()) > 1e-3
    assert float(torch.diagonal(gate_cov).max()) < SCALES.gate_sd**2


def test_block_form_equals_dense_form_after_ep_with_features() -> None:
    dense, blocks = _featured_campaign("dense"), _featured_campaign("blocks")
    dense.refine(max_sweeps=50)
    blocks.refine(max_sweeps=50)
    assert torch.allclose(dense.posterior.mean, blocks.posterior.mean, atol=ATOL, rtol=0)
    assert torch.allclose(dense.posterior.cov, blocks.posterior.cov, atol=ATOL, rtol=0)


@pytest.mark.parametrize("structure", ["dense", "blocks"])
def test_one_hot_features_are_contexts(structure: str) -> None:
    """MATH.md §8 (a): with p = e_c and one default context, f = s'(w + u_0 + W e_c) + r is
    the context model f = s'(w' + u'_c) + r with w' = w + u_0 (sd sqrt(ws^2 + cs^2)) and
    u'_c = W's column c (sd gate_sd): the same posterior over the clips, and the blocks map."""
    ws, cs, gs = SCALES.weight_scale, SCALES.context_scale, SCALES.gate_sd
    context_scales = PriorScales(
        weight_scale=math.hypot(ws, cs), context_scale=gs, residual_scale=1.0
    )
    with_contexts = _campaign(structure, 0, context_scales)
    with_gate = _campaign(structure, 3)
    generator = torch.Generator().manual_seed(SEED)
    scores = torch.randn(15, 3, generator=generator)
    scores[4, 2] = math.nan  # a missing score's variance agrees too, before any label
    groups = [i // 3 for i in range(15)]
    context = [g % 3 for g in groups]
    one_hot = torch.eye(3)[context]
    with_contexts.add_clips(scores, groups=groups, contexts=context)
    with_gate.add_clips(scores, groups=groups, features=one_hot)
    labels = _labels(generator, 5, 3, 30)
    with_contexts.observe(labels)
    with_gate.observe(labels)
    late = torch.randn(3, 3, generator=generator)
    with_contexts.add_clips(late, groups=[5] * 3, contexts=[1] * 3)
    with_gate.add_clips(late, groups=[5] * 3, features=torch.eye(3)[[1, 1, 1]])
    labels = _labels(generator, 6, 3, 10)
    with_contexts.observe(labels)
    with_gate.observe(labels)

    a, b = with_contexts.posterior, with_gate.posterior
    assert torch.allclose(a.item_mean, b.item_mean, atol=ATOL, rtol=0)
    assert torch.allclose(a.item_cov, b.item_cov, atol=ATOL, rtol=0)
    # w' = w + u_0 and u'_c = W[:, c]
    n, layout_b = b.n_items, b.layout
    weights = layout_b[WEIGHTS].positions()
    combined = torch.zeros(3, b.mean.shape[0])
    combined[torch.arange(3), weights] = 1.0
    combined[torch.arange(3), layout_b[context_block(0)].positions()] = 1.0
    assert torch.allclose(a.block(WEIGHTS)[0], combined @ b.mean, atol=ATOL, rtol=0)
    gate = layout_b[GATE].positions()
    for c in range(3):
        column = gate[c * 3 : (c + 1) * 3]  # vec(W) stacks columns: W[:, c]
        assert torch.allclose(a.block(context_block(c))[0], b.mean[column], atol=ATOL, rtol=0)
        cross = a.cov[a.layout[context_block(c)].index][:, :n]
        assert torch.allclose(cross, b.cov[column][:, :n], atol=ATOL, rtol=0)


def _reference_prior(
    scores: torch.Tensor, features: torch.Tensor, context: list[int], n_contexts: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """theta = [w | u_0 .. u_{C-1} | vec(W) | r] with its diagonal prior, and X with f = X theta,
    built from MATH.md §1, §8 directly (standardised scores, no missing ones)."""
    n, k = scores.shape
    d = features.shape[1]
    centred = (scores - scores.mean(0)) / scores.std(0)
    x = torch.zeros(n, k + n_contexts * k + k * d + n)
    for i in range(n):
        x[i, :k] = centred[i]
        x[i, k + context[i] * k : k + (context[i] + 1) * k] = centred[i]
        x[i, k + n_contexts * k : k + n_contexts * k + k * d] = torch.kron(features[i], centred[i])
        x[i, k + n_contexts * k + k * d + i] = 1.0
    variances = torch.cat(
        (
            torch.full((k,), SCALES.weight_scale**2),
            torch.full((n_contexts * k,), SCALES.context_scale**2),
            torch.full((k * d,), SCALES.gate_sd**2),
            torch.full((n,), SCALES.residual_scale**2),
        )
    )
    return x, variances


def _to_campaign_space(x: torch.Tensor, n: int) -> torch.Tensor:
    """T with [f | border] = T theta: f = X theta, the border is theta without the residuals."""
    size = x.shape[1]
    border = torch.eye(size)[: size - n]
    return torch.cat((x, border))


def _one_step_campaign() -> tuple[Campaign, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(SEED + 1)
    scores = torch.randn(6, 3, generator=generator)
    prompts = torch.randn(2, 2, generator=generator)
    groups = [0, 0, 0, 1, 1, 1]
    contexts = [0, 0, 0, 1, 1, 1]
    campaign = _campaign("dense", feature_dim=2)
    campaign.add_clips(scores, groups=groups, contexts=contexts, features=prompts[groups])
    x, variances = _reference_prior(scores, prompts[groups], contexts, 2)
    return campaign, x, variances


def test_one_rating_is_the_exact_tilted_moments() -> None:
    """MATH.md §8 (c): after one emoji rating, the posterior is the prior conditioned on the
    tilted moments of z = f_i computed by 30-digit quadrature, `E[theta | y] = m + S a (E[z|y]
    - mu) / s2` and the like for the covariance (Gaussian conditioning on z, exact since y
    depends on theta through z alone), with the prior built independently."""
    campaign, x, variances = _one_step_campaign()
    item, level, noise = 4, 2, 0.7
    campaign.observe([Judgment.rating(None, item, level, noise_sd=noise)])
    cov = torch.diag(variances)
    a = x[item]
    mu, s2 = 0.0, float(a @ cov @ a)
    _, z_mean, z_var = tilted_moments(mu, s2, THRESHOLDS[1], math.inf, noise)
    through = cov @ a
    mean = through * (z_mean - mu) / s2
    posterior_cov = cov + torch.outer(through, through) * (z_var - s2) / s2**2
    transform = _to_campaign_space(x, 6)
    after = campaign.posterior
    assert torch.allclose(after.mean, transform @ mean, atol=1e-9, rtol=0)
    assert torch.allclose(after.cov, transform @ posterior_cov @ transform.T, atol=1e-9, rtol=0)


def test_one_pair_is_the_importance_sampled_posterior() -> None:
    """MATH.md §8 (c): after one comparison, the posterior's moments match importance
    sampling of prior x likelihood (400,000 draws), the prior built independently."""
    campaign, x, variances = _one_step_campaign()
    noise = 0.8
    campaign.observe([Judgment.pair(None, 3, 5, "win", noise_sd=noise)])  # z > tie margin 0.3
    direction = x[3] - x[5]
    mean, cov = sampled_tilted_moments(
        torch.zeros(x.shape[1]), torch.diag(variances), direction, 0.3, noise, seed=7
    )
    transform = _to_campaign_space(x, 6)
    after = campaign.posterior
    assert torch.allclose(after.mean, transform @ mean, atol=0.01)
    # clip variances reach 3.9: a sampled second moment's error is about 1 % of it
    assert torch.allclose(after.cov, transform @ cov @ transform.T, atol=0.01, rtol=0.01)
    gate = after.layout[GATE].index
    assert float(after.mean[gate].abs().max()) > 0.02  # the gate took part of the answer


@pytest.mark.parametrize("structure", ["dense", "blocks"])
def test_replay_is_bit_for_bit(structure: str) -> None:
    """MATH.md §8 (d): a replay re-adds the features and gives the same posterior."""
    campaign = _featured_campaign(structure)
    campaign.fit_prior(max_evaluations=20)
    replayed = campaign.replay()
    assert torch.equal(campaign.posterior.mean, replayed.posterior.mean)
    assert torch.equal(campaign.posterior.cov, replayed.posterior.cov)


def test_a_clip_never_rated_is_predicted_through_the_gate() -> None:
    """Its posterior mean is s'(m_w + m_{u_c} + m_W p): the gate's weights at p (read by
    `gate_weights`) plus its context's offsets."""
    campaign = _featured_campaign("blocks")
    generator = torch.Generator().manual_seed(SEED + 2)
    raw = torch.randn(2, 3, generator=generator)
    prompt = torch.randn(1, 4, generator=generator).repeat(2, 1)
    new = campaign.add_clips(raw, groups=["new"] * 2, contexts=["y"] * 2, features=prompt)
    weights, _ = campaign.gate_weights(prompt)
    with_context, _ = campaign.gate_weights(prompt, contexts=["y", "y"])
    posterior = campaign.posterior
    y = campaign.context_names.index("y")
    offsets = posterior.block(context_block(y))[0]
    assert torch.allclose(with_context, weights + offsets, atol=ATOL, rtol=0)
    # the campaign's standardisation, frozen at the first label: the 18 initial clips' scores
    scores = torch.randn(18, 3, generator=torch.Generator().manual_seed(SEED))
    scores[2, 1] = scores[7, 0] = math.nan
    centre = torch.nanmean(scores, 0)
    scale = torch.tensor([float(scores[:, k][~torch.isnan(scores[:, k])].std()) for k in range(3)])
    standardised = (raw - centre) / scale
    expected = (standardised * (weights + offsets)).sum(-1)
    assert torch.allclose(posterior.item_mean[list(new)], expected, atol=ATOL, rtol=0)


def test_gate_columns_read_vec_w_by_column() -> None:
    campaign = _featured_campaign("blocks")
    mean, sd = campaign.gate_columns()
    block_mean, block_cov = campaign.posterior.block(GATE)
    assert mean.shape == sd.shape == (4, 3)
    assert torch.allclose(mean[2], block_mean[6:9], atol=ATOL, rtol=0)
    assert torch.allclose(sd[2], torch.diagonal(block_cov)[6:9].sqrt(), atol=ATOL, rtol=0)
    # W[:, d] is how feature d moves the weights: w(e_d) - w(0)
    at_d, _ = campaign.gate_weights(torch.eye(4)[2:3])
    at_zero, _ = campaign.gate_weights(torch.zeros(1, 4))
    assert torch.allclose(at_d[0] - at_zero[0], mean[2], atol=ATOL, rtol=0)


def test_gate_loadings_are_kron() -> None:
    scores = torch.tensor([[1.0, 2.0, 3.0]])
    features = torch.tensor([[0.5, -1.0]])
    expected = torch.kron(features[0], scores[0])[None]
    assert torch.equal(gate_loadings(scores, features), expected)


@pytest.mark.parametrize(
    "features",
    [
        [[0.1, 0.2, 0.3]],  # wrong length
        [[0.1, math.nan, 0.3, 0.4]],
        [[0.1, math.inf, 0.3, 0.4]],
        torch.zeros(2, 4),  # two vectors for one clip
    ],
)
def test_bad_features_are_refused_and_add_nothing(features: object) -> None:
    campaign = _featured_campaign("blocks")
    before = campaign.posterior
    with pytest.raises(ValueError):
        campaign.add_clips([[0.0, 0.0, 0.0]], groups=["bad"], features=features)  # type: ignore[arg-type]
    assert campaign.n_items == before.n_items
    assert torch.equal(campaign.posterior.mean, before.mean)
    replayed = campaign.replay()
    assert replayed.n_items == before.n_items


def test_features_need_a_gate_and_config_bounds() -> None:
    campaign = _campaign("dense", feature_dim=0)
    with pytest.raises(ValueError, match="no feature gate"):
        campaign.add_clips([[0.0, 0.0, 0.0]], features=[[1.0]])
    with pytest.raises(ValueError, match="feature_dim"):
        CampaignConfig(feature_dim=65)
    with pytest.raises(ValueError, match="needs criteria"):
        CampaignConfig(criteria=(), feature_dim=2)
