"""Suite-wide settings: a derandomised hypothesis profile and float64 engine tests."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

SEED = 0

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, max_examples=200)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _float64_and_seeded():
    """Engine tests run in float64 with a fixed global seed; restored afterwards."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(SEED)
    yield
    torch.set_default_dtype(previous)
