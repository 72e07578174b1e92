import pytest
import torch

from ssgd.models import build_model


@pytest.fixture(scope="session")
def digits():
    from ssgd.data import load_dataset

    return load_dataset("digits")


@pytest.fixture(scope="session")
def lenet8(digits):
    return build_model("lenet", digits.shape, 10, seed=0)


@pytest.fixture(scope="session")
def six(digits):
    """Six real 8x8 digit images with six distinct labels."""
    seen, idx = set(), []
    for i, c in enumerate(digits.y_train.tolist()):
        if c not in seen:
            seen.add(c)
            idx.append(i)
        if len(idx) == 6:
            break
    idx = torch.tensor(idx)
    return digits.x_train[idx], digits.y_train[idx]
