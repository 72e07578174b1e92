import math

import pytest
import torch

from ssgd.metrics import PSNR_MAX, label_accuracy, match, mse, psnr, psnr_per_image, score_batch, ssim


@pytest.fixture
def imgs():
    g = torch.Generator().manual_seed(0)
    return torch.rand(5, 1, 16, 16, generator=g)


def test_known_values(imgs):
    shifted = (imgs + 0.1).clamp(max=2)
    assert mse(shifted, imgs) == pytest.approx(0.01, rel=1e-5)
    assert psnr(shifted, imgs) == pytest.approx(20.0, abs=1e-3)
    assert psnr(imgs, imgs) == PSNR_MAX
    assert ssim(imgs, imgs) == pytest.approx(1.0, abs=1e-6)
    assert ssim(torch.rand(5, 1, 16, 16, generator=torch.Generator().manual_seed(5)), imgs) < 0.3
    for v in (mse(imgs, imgs), psnr(imgs, imgs), ssim(imgs, imgs)):
        assert type(v) is float


def test_ssim_is_the_structural_one(imgs):
    """SSIM (unlike PSNR) punishes structure loss more than a brightness shift of equal MSE."""
    blur = torch.nn.functional.avg_pool2d(imgs, 3, 1, 1)
    err = float(((blur - imgs) ** 2).mean())
    shift = imgs + math.sqrt(err)
    assert abs(psnr(blur, imgs) - psnr(shift, imgs)) < 0.1
    assert ssim(shift, imgs) > ssim(blur, imgs) + 0.2


def test_shapes_checked(imgs):
    with pytest.raises(ValueError, match="shapes differ"):
        mse(imgs, imgs[:2])
    assert len(psnr_per_image(imgs[0], imgs[0])) == 1


def test_match_recovers_permutation(imgs):
    perm = torch.tensor([3, 0, 4, 1, 2])
    recon = imgs[perm] + 0.01 * torch.randn(5, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    p = match(recon, imgs)
    assert torch.equal(recon[p], recon[p])
    assert torch.allclose(recon[p], imgs, atol=0.1)
    s = score_batch(recon, imgs)
    assert s["psnr"] > 35 and s["ssim"] > 0.9
    unmatched = psnr(recon, imgs)
    assert unmatched < s["psnr"] - 20
    assert all(type(v) is float for v in s.values())


def test_label_accuracy_is_a_multiset_overlap():
    assert label_accuracy([1, 2, 2, 3], [2, 3, 1, 2]) == 1.0
    assert label_accuracy([1, 1, 1, 1], [1, 2, 3, 1]) == 0.5
    assert label_accuracy(torch.tensor([0]), torch.tensor([1])) == 0.0
    assert math.isnan(label_accuracy(None, [1]))
    with pytest.raises(ValueError, match="label counts differ"):
        label_accuracy([1], [1, 2])
