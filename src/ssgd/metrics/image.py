"""Image-reconstruction quality: MSE, PSNR and SSIM (the real SSIM, via torchmetrics).

All functions take images in ``[0, 1]`` of shape ``(N, C, H, W)`` (or one ``(C, H, W)``
image), compare them pair by pair, and return plain Python floats: the mean over the
``N`` pairs, or a list with one value per pair from the ``*_per_image`` variants.

PSNR is :math:`10 \\log_{10}(1 / \\mathrm{MSE})` with data range 1; an exact
reconstruction would give infinity, so the MSE is floored at ``1e-10`` (PSNR at most
100 dB) to keep means and JSON files finite.
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["PSNR_MAX", "mse", "mse_per_image", "psnr", "psnr_per_image", "ssim", "ssim_per_image"]

PSNR_MAX = 100.0
_MSE_FLOOR = 10 ** (-PSNR_MAX / 10)


def _pair(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}; compare images of one shape")
    if a.ndim == 3:
        a, b = a.unsqueeze(0), b.unsqueeze(0)
    if a.ndim != 4:
        raise ValueError(f"expected images (N, C, H, W) or (C, H, W), got shape {tuple(a.shape)}")
    return a.detach().float().cpu(), b.detach().float().cpu()


def mse_per_image(recon: Tensor, target: Tensor) -> list[float]:
    a, b = _pair(recon, target)
    return ((a - b) ** 2).flatten(1).mean(1).tolist()


def psnr_per_image(recon: Tensor, target: Tensor) -> list[float]:
    from torchmetrics.functional.image import peak_signal_noise_ratio

    a, b = _pair(recon, target)
    out = []
    for i in range(a.shape[0]):
        m = float(((a[i] - b[i]) ** 2).mean())
        if m < _MSE_FLOOR:
            out.append(PSNR_MAX)
        else:
            out.append(float(peak_signal_noise_ratio(a[i:i + 1], b[i:i + 1], data_range=1.0)))
    return out


def ssim_per_image(recon: Tensor, target: Tensor) -> list[float]:
    from torchmetrics.functional.image import structural_similarity_index_measure

    a, b = _pair(recon, target)
    vals = structural_similarity_index_measure(a, b, data_range=1.0, reduction="none")
    return [float(v) for v in vals.reshape(-1)]


def _mean(xs: list[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else float("nan")


def mse(recon: Tensor, target: Tensor) -> float:
    """Mean squared error per pixel, averaged over the image pairs."""
    return _mean(mse_per_image(recon, target))


def psnr(recon: Tensor, target: Tensor) -> float:
    """Peak signal-to-noise ratio in dB (data range 1), averaged over the image pairs."""
    return _mean(psnr_per_image(recon, target))


def ssim(recon: Tensor, target: Tensor) -> float:
    """Structural similarity (Wang et al. 2004; torchmetrics, Gaussian 11x11), averaged over pairs."""
    return _mean(ssim_per_image(recon, target))
