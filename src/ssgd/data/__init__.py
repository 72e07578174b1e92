"""Datasets (offline), partitioning across nodes, and noisy-data transforms."""

from .datasets import DATASETS, DatasetError, ImageDataset, load_dataset, register_dataset

__all__ = ["DATASETS", "DatasetError", "ImageDataset", "load_dataset", "register_dataset"]
