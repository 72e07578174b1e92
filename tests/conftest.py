"""Shared test setup: one torch thread and a fixed seed for every test (deterministic, CPU-friendly)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _torch_seed_and_threads():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
