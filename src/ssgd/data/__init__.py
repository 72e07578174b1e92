"""Datasets (offline), ScatterNet features, partitioning across nodes, and noisy-data transforms."""

from .datasets import (DATASETS, DatasetError, ImageDataset, load_dataset, register_dataset, subsample,
                       train_val_split)
from .idx import read_idx
from .noise import PIXEL_SENSITIVITY, add_laplace_noise, laplace_scale, with_laplace_noise
from .partition import dirichlet_partition, iid_partition, partition
from .scatternet import (load_fashion_mnist_scatternet, scattering_channels, scattering_transform,
                         scatternet_cache_path, scatternet_features)

__all__ = ["DATASETS", "DatasetError", "ImageDataset", "load_dataset", "register_dataset", "subsample",
           "train_val_split", "read_idx", "PIXEL_SENSITIVITY", "add_laplace_noise", "laplace_scale",
           "with_laplace_noise", "dirichlet_partition", "iid_partition", "partition", "load_fashion_mnist_scatternet",
           "scattering_channels", "scattering_transform", "scatternet_cache_path", "scatternet_features"]
