"""Which classes and samples a job sees: strategies, manifests, dataset metadata.

Strategies (one file each, registered in :mod:`subsets.registry`), as ``[subsets.NAME]`` tables:

* ``full``: every class and sample.
* ``uniform``: ``k`` classes, ``mode = "even"`` (every n-th in wnid order) or ``"random"`` (``seed``).
* ``named``: ``wnids_file = "path"``, ``list = "imagenet100"`` (shipped) or ``wnids = [...]``.
* ``per_class_accuracy``: ``accuracy_file``, ``k``, ``mode = "easiest" | "hardest" | "spread"``.
* ``wordnet``: ``mode = "cover"`` (``k``, ``depth``, ``allocation``, ``seed``) or ``"subtree"``
  (``roots``, optional ``k``), on the WordNet hierarchy of the wnids (:mod:`subsets.hierarchy`).

Every table may add ``fraction`` (of each class's train images, stratified) and ``fraction_seed``.
"""

from subsets.base import Manifest, ManifestError, SubsetError
from subsets.meta import ClassInfo, DatasetMeta, DatasetMetaError
from subsets.resolve import resolve, validate_table

__all__ = [
    "ClassInfo",
    "DatasetMeta",
    "DatasetMetaError",
    "Manifest",
    "ManifestError",
    "SubsetError",
    "resolve",
    "validate_table",
]
