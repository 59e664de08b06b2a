"""theta's named blocks (engine.blocks): one layout for both posterior forms."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from engine import Campaign, CampaignConfig
from engine.blocks import Layout, border_layout, theta_layout


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
