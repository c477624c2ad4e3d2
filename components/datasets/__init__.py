"""Datasets: specs whose ``instantiate()`` returns an in-memory ``ImageDataset`` (uint8 images, labels).

``shapes`` is the embedded, procedurally generated default; ``folder`` reads a directory tree or a .zip of
PNG/JPEG images; ``array`` memory-maps a set prepared by ``python -m harness.prepare``. See docs/datasets.md.
"""

from components.datasets.array import Array
from components.datasets.base import MIN_IMAGES, DatasetError, ImageDataset, OverLimit, ReadLimits
from components.datasets.folder import Folder
from components.datasets.shapes import SHAPE_TYPES, Shapes

DATASETS = {
    "shapes": Shapes,
    "folder": Folder,
    "array": Array,
}

__all__ = [
    "DATASETS",
    "MIN_IMAGES",
    "SHAPE_TYPES",
    "Array",
    "DatasetError",
    "Folder",
    "ImageDataset",
    "OverLimit",
    "ReadLimits",
    "Shapes",
]
