"""Data pre-flight benchmark: the time ``launch`` spends checking an ImageNet-size ``.beton``.

Builds a synthetic FFCV file with the layout of ImageNet-1K's train split (1,281,167 samples, an image
and a label field, ~110 KB of image data per sample, the data region a sparse hole of ~140 GB that costs
no disk), then times :func:`orchestrator.preflight_data.check_beton` (header, descriptors, metadata and
allocation tables, labels) against FFCV's own ``Reader`` opening the same file, measured in the same run.

    .venv/bin/python -m benchmarks.bench_preflight [--samples 1281167] [--repeat 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

PER_SAMPLE = 110_000


def write_synthetic_beton(path: Path, n: int, num_classes: int = 1000) -> np.ndarray:
    """An FFCV file whose tables are complete and whose image data is a sparse hole; returns its labels."""
    from workers.data._ffcv import import_ffcv

    import_ffcv()
    from ffcv import types
    from ffcv.fields import IntField, RGBImageField

    fields = [("image", RGBImageField(), 2), ("label", IntField(), 1)]
    descs = np.zeros(len(fields), dtype=types.FieldDescType)
    for i, (name, f, type_id) in enumerate(fields):
        descs[i]["type_id"] = type_id
        descs[i]["name"][: len(name)] = np.frombuffer(name.encode(), dtype=np.uint8)
        descs[i]["arguments"][:] = np.frombuffer(f.to_binary().tobytes(), dtype=np.uint8)[:1024]
    meta_t = types.get_metadata_type(types.get_handlers(descs))
    labels = np.random.default_rng(0).integers(0, num_classes, n)
    metadata = np.zeros(n, dtype=meta_t)
    metadata[meta_t.names[1]] = labels
    data_start = types.HeaderType.itemsize + descs.nbytes + metadata.nbytes
    table_at = data_start + n * PER_SAMPLE
    header = np.zeros(1, dtype=types.HeaderType)
    header["version"], header["num_fields"], header["page_size"] = types.CURRENT_VERSION, len(fields), 1 << 23
    header["num_samples"], header["alloc_table_ptr"] = n, table_at
    table = np.zeros(n, dtype=types.ALLOC_TABLE_TYPE)
    table["sample_id"] = np.arange(n)
    table["ptr"] = data_start + np.arange(n, dtype=np.uint64) * PER_SAMPLE
    table["size"] = PER_SAMPLE
    with open(path, "wb") as fh:
        fh.write(header.tobytes() + descs.tobytes() + metadata.tobytes())
        fh.seek(table_at)  # the data region stays a hole
        fh.write(table.tobytes())
    return labels


def _best(fn, repeat: int) -> float:  # noqa: ANN001
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1_281_167)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from ffcv.reader import Reader

    from orchestrator.preflight_data import check_beton

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.beton"
        labels = write_synthetic_beton(path, args.samples)
        size_gb = path.stat().st_size / 1e9
        ours = _best(lambda: check_beton(path, labels, "bench"), args.repeat)
        ffcv = _best(lambda: Reader(str(path)), args.repeat)
    print(f"{args.samples:,} samples, {size_gb:.0f} GB file (sparse)")
    print(f"pre-flight check_beton: {ours * 1000:.0f} ms")
    print(f"FFCV Reader (baseline): {ffcv * 1000:.0f} ms")
    print(f"ratio pre-flight / FFCV Reader: {ours / ffcv:.2f}")


if __name__ == "__main__":
    main()
