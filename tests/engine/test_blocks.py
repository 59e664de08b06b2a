"""theta's named blocks (engine.blocks): one layout for both posterior forms."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from engine import Campaign, CampaignConfig
from engine.blocks import Layout, border_layout, theta_layout
from engine.state import quality_prior


@given(st.integers(0, 50), st.integers(0, 6), st.integers(0, 5))
def test_blocks_tile_theta_in_order(n_items: int, n_criteria: int, n_contexts: int) -> None:
    layout = theta_layout(n_items, n_criteria, n_contexts)
    assert layout.size == n_items + n_criteria * (1 + n_contexts)
    assert layout.names[:2] == ("quality", "weights")
    assert all(a.stop == b.start for a, b in zip(layout.blocks, layout.blocks[1:], strict=False))
    border = border_layout(n_criteria, n_contexts)
    assert border.names == layout.names[1:]
    assert [b.start + n_items for b in border] == [b.start for b in layout.blocks[1:]]


def test_bad_layouts_are_refused() -> None:
    with pytest.raises(ValueError, match="unique"):
        Layout.of([("a", 1), ("a", 2)])
    with pytest.raises(ValueError, match="negative"):
        Layout.of([("a", -1)])
    assert "b" in Layout.of([("a", 1), ("b", 2)]) and Layout.of([]).size == 0


def test_the_dense_posterior_reads_its_weights_by_name() -> None:
    """`Posterior.block` and the index helpers agree with the campaign's weight read-out."""
    campaign = Campaign(CampaignConfig(criteria=("a", "b")), device="cpu")
    campaign.add_clips(
        torch.randn(5, 2, generator=torch.Generator().manual_seed(0)).tolist(),
        contexts=["x", "y", "x", "y", "y"],
    )
    campaign.observe_pair(0, 1, "win")
    posterior = campaign.posterior
    mean, cov = posterior.block("weights")
    summary = campaign.weights()
    torch.testing.assert_close(mean, summary.mean)
    torch.testing.assert_close(cov, summary.cov)
    assert posterior.weight_index().tolist() == [5, 6]
    assert posterior.context_weight_index(torch.tensor([1])).tolist() == [[9, 10]]
    assert posterior.layout["context:1"].positions().tolist() == [9, 10]


@given(st.integers(0, 12), st.floats(0.1, 5.0), st.floats(0.0, 0.9))
def test_the_quality_prior_has_the_stated_total(n_criteria: int, sd: float, share: float) -> None:
    """A clip with standardised scores (E s^2 = 1 per criterion) has prior quality variance
    K (w^2 + c^2) + tau^2 = sd^2 under `quality_prior`, share of it from the criteria."""
    prior = quality_prior(n_criteria, sd, share)
    explained = n_criteria * (prior.weight_scale**2 + prior.context_scale**2)
    assert explained + prior.residual_scale**2 == pytest.approx(sd**2)
    if n_criteria:
        assert explained == pytest.approx(share * sd**2)
    with pytest.raises(ValueError):
        quality_prior(n_criteria, 0.0)
