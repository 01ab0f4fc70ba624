"""Which classes and samples a job sees: strategies, manifests, dataset metadata."""

from subsets.base import Manifest, SubsetError, resolve, validate_table
from subsets.meta import ClassInfo, DatasetMeta, DatasetMetaError

__all__ = [
    "ClassInfo",
    "DatasetMeta",
    "DatasetMetaError",
    "Manifest",
    "SubsetError",
    "resolve",
    "validate_table",
]
