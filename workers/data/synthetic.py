"""A synthetic ImageNet-style JPEG image folder for scale tests and benchmarks.

Classes are named by real ImageNet-1K wnids (evenly spread over timm's synset list), so names and
WordNet strategies work on them. Each class has its own colour and stripe orientation/frequency, and
every image adds random size, phase, a random disc, shading and noise: learnable, not trivial.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import shutil
from pathlib import Path

import numpy as np

from workers.data.errors import DataWriteError
from workers.data.imagenet import imagenet_wnids

log = logging.getLogger(__name__)

MARKER = ".synthetic.json"


def spread_wnids(num_classes: int) -> list[str]:
    """``num_classes`` ImageNet-1K wnids evenly spread over the 1,000 (the first ones if all are taken)."""
    wnids = imagenet_wnids()
    if not 1 <= num_classes <= len(wnids):
        raise ValueError(f"num_classes: expected an integer in 1..{len(wnids)}, got {num_classes}")
    picks = np.floor(np.arange(num_classes) * len(wnids) / num_classes).astype(int)
    return [wnids[i] for i in picks]


def class_style(c: int, num_classes: int) -> tuple[np.ndarray, float, float]:
    """(RGB colour in [0, 1], stripe angle, stripe frequency) of class ``c``."""
    import colorsys

    hue = (c * 0.61803398875) % 1.0  # golden-ratio hues: neighbours differ
    rgb = np.array(colorsys.hsv_to_rgb(hue, 0.55 + 0.4 * ((c * 7) % 3) / 2, 0.85), dtype=np.float32)
    angle = np.pi * ((c * 5) % max(1, num_classes)) / max(1, num_classes)
    freq = 4.0 + 3.0 * (c % 4)
    return rgb, float(angle), float(freq)


def render_image(c: int, num_classes: int, rng: np.random.Generator, min_size: int, max_size: int) -> np.ndarray:
    """One H x W x 3 uint8 image of class ``c``."""
    h, w = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
    rgb, angle, freq = class_style(c, num_classes)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy /= max(h, w)
    xx /= max(h, w)
    angle += rng.normal(0, 0.08)
    phase = rng.uniform(0, 2 * np.pi)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)) + phase)
    cy, cx, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.08, 0.25)
    disc = ((yy - cy * h / max(h, w)) ** 2 + (xx - cx * w / max(h, w)) ** 2) < r * r
    shade = 0.75 + 0.25 * (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1))
    colour = np.clip(rgb + rng.normal(0, 0.05, 3), 0, 1).astype(np.float32)
    img = stripes[..., None] * colour[None, None] * shade[..., None]
    img[disc] = 1.0 - img[disc]
    img += rng.normal(0, 0.04, size=(h, w, 1)).astype(np.float32)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def _render_job(job: tuple[str, int, int, int, int, int, int]) -> None:
    from PIL import Image

    path, c, num_classes, min_size, max_size, seed, quality = job
    rng = np.random.default_rng(seed)
    Image.fromarray(render_image(c, num_classes, rng, min_size, max_size)).save(path, quality=quality)


def make_synthetic_image_folder(
    out: str | Path,
    num_classes: int,
    train_per_class: int,
    val_per_class: int,
    min_size: int = 256,
    max_size: int = 500,
    seed: int = 0,
    *,
    jpeg_quality: int = 90,
    num_workers: int | None = None,
) -> Path:
    """Write ``out/{train,val}/<wnid>/*.JPEG``; return ``out``.

    Idempotent: an existing folder made with the same arguments is returned as is; it is built in a
    sibling temporary folder and renamed into place, so ``out`` is never half-written.
    """
    out = Path(out)
    params = {
        "num_classes": num_classes, "train_per_class": train_per_class, "val_per_class": val_per_class,
        "min_size": min_size, "max_size": max_size, "seed": seed, "jpeg_quality": jpeg_quality,
    }
    if not 1 <= num_classes <= 1000:
        raise DataWriteError(out, "num_classes", "an integer in 1..1000 (ImageNet-1K wnids)")
    if not 8 <= min_size <= max_size:
        raise DataWriteError(out, "min_size", "8 <= min_size <= max_size")
    if train_per_class < 1 or val_per_class < 1:
        raise DataWriteError(out, "train_per_class", "at least one train and one val image per class")
    marker = out / MARKER
    if marker.is_file():
        if json.loads(marker.read_text()) == params:
            return out
        shutil.rmtree(out)  # our own folder, made with other arguments
    elif out.exists() and any(out.iterdir()):
        raise DataWriteError(out, "output", "a new or empty folder (it holds files not made by this generator)")

    wnids = spread_wnids(num_classes)
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    jobs = []
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        for c, wnid in enumerate(wnids):
            (tmp / split / wnid).mkdir(parents=True)
            for i in range(per_class):
                sample_seed = int(np.random.SeedSequence([seed, c, i, split == "val"]).generate_state(1)[0])
                name = f"{wnid}_{i:05d}.JPEG" if split == "train" else f"{wnid}_val_{i:05d}.JPEG"
                jobs.append((str(tmp / split / wnid / name), c, num_classes, min_size, max_size,
                             sample_seed, jpeg_quality))
    workers = num_workers or len(os.sched_getaffinity(0))
    log.info("generating %d synthetic images in %s", len(jobs), out)
    if workers > 1:
        with mp.get_context("fork").Pool(workers) as pool:
            pool.map(_render_job, jobs, chunksize=16)
    else:
        for job in jobs:
            _render_job(job)
    (tmp / MARKER).write_text(json.dumps(params))
    if out.exists():
        out.rmdir()  # empty (checked above)
    os.replace(tmp, out)
    return out
