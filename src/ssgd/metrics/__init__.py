"""Metrics of leakage: image quality (MSE, PSNR, SSIM), label accuracy, batch matching."""

from .image import PSNR_MAX, mse, mse_per_image, psnr, psnr_per_image, ssim, ssim_per_image
from .matching import label_accuracy, match, score_batch

__all__ = ["PSNR_MAX", "label_accuracy", "match", "mse", "mse_per_image", "psnr", "psnr_per_image",
           "score_batch", "ssim", "ssim_per_image"]
