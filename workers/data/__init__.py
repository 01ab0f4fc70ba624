"""Data layer: write image folders to FFCV ``.beton`` files, build subset loaders, augmentation recipes.

Import the submodules directly (``workers.data.loader``, ``workers.data.write``...): this package
imports nothing heavy so that the CLI can mount ``workers.data.cli`` without loading torch or FFCV.
"""
