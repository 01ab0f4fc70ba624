"""Data layer: write image folders to FFCV ``.beton`` files, build subset loaders, augmentation recipes.

Modules: ``write`` (``dlth-orch data write``: image folder -> dataset directory), ``scan`` (the image
folder's checks), ``beton`` (FFCV's writer, supervised), ``loader`` (``build_loader`` -> ``SubsetLoader``),
``recipes`` and ``augment`` (augmentation recipes and their batched per-sample ops), ``builtin``
(``prepare_digits``), ``synthetic`` (``make_synthetic_image_folder``), ``cli`` (the ``data`` click group),
``jit`` (FFCV's JIT switch), ``errors`` (``DataWriteError``).

Import the submodules directly: this package imports nothing heavy so that the CLI can mount
``workers.data.cli`` without loading torch or FFCV.
"""
