"""Draw roi_detection polygons (and optionally poi_detection points) on an image, to check by eye.

    python bench/draw_overlay.py IMAGE OUT.png [--points] [--params '{"sensitivity": 0.7}']
    python bench/draw_overlay.py --composite TILE.png OUT.png [--size 1024] [--seed 1]

``--composite`` first builds a test tile, because the dev images are tissue
from edge to edge: crops of the dev H&E images pasted onto a tinted, noisy
glass background in irregular blobs, with a glass hole, a faint region,
feathered edges, a fragment too small to keep and dust specks. It also
prints the IoU of the detected tissue against the known truth mask.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw
from scipy import ndimage
from shapely.geometry import shape

from primaa.plugins.algorithm import AlgorithmResult, RGBImage
from primaa.plugins.registry import load_registry

DEV_IMAGES = Path("/work/shared/data/nuclei-dev")
OUTLINE = (0, 200, 60)
HOLE = (255, 120, 0)
POINT = (255, 220, 0)


def composite_tile(
    size: int, seed: int, dev_images: Path = DEV_IMAGES
) -> tuple[RGBImage, npt.NDArray[np.bool_]]:
    """A glass-and-tissue tile and its truth mask (tissue at more than half opacity)."""
    rng = np.random.default_rng(seed)
    sources = sorted(dev_images.glob("*.png"))
    tissue = np.zeros((size, size, 3), np.uint8)
    for top in range(0, size, 512):
        for left in range(0, size, 512):
            crop = np.asarray(Image.open(sources[rng.integers(len(sources))]).convert("RGB"))
            crop = np.rot90(crop, int(rng.integers(4)))
            h, w = min(512, size - top), min(512, size - left)
            tissue[top : top + h, left : left + w] = crop[:h, :w]

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    coarse = ndimage.gaussian_filter(rng.standard_normal((256, 256)).astype(np.float32), 6.4)
    noise = ndimage.zoom(coarse, size / 256, order=1)[:size, :size]
    noise /= np.abs(noise).max()
    wobble = 0.04 * noise
    big = ((xx - 0.38) / 0.28) ** 2 + ((yy - 0.42) / 0.33) ** 2 + wobble < 1.0
    lumen = ((xx - 0.40) / 0.08) ** 2 + ((yy - 0.45) / 0.06) ** 2 < 1.0
    small = ((xx - 0.80) / 0.11) ** 2 + ((yy - 0.78) / 0.09) ** 2 + wobble < 1.0
    faint = ((xx - 0.80) / 0.10) ** 2 + ((yy - 0.22) / 0.12) ** 2 + wobble < 1.0
    fragment = (xx - 0.75) ** 2 + (yy - 0.50) ** 2 < (0.008) ** 2

    alpha = np.zeros((size, size), np.float32)
    alpha[(big & ~lumen) | small | fragment] = 1.0
    alpha[faint] = 0.45
    alpha = ndimage.gaussian_filter(alpha, size / 400)
    truth = alpha > 0.25

    glass = np.empty((size, size, 3), np.float32)
    glass[:] = (236.0, 233.0, 240.0)
    glass -= 10.0 * ((xx - 0.5) ** 2 + (yy - 0.5) ** 2)[..., None]
    glass += rng.normal(0.0, 2.0, (size, size, 3)).astype(np.float32)
    out = glass * (1.0 - alpha[..., None]) + tissue.astype(np.float32) * alpha[..., None]
    for _ in range(40):
        y, x = rng.integers(0, size, 2)
        r = int(rng.integers(1, 4))
        out[max(0, y - r) : y + r, max(0, x - r) : x + r] = rng.uniform(60, 160)
    return np.clip(out, 0, 255).astype(np.uint8), truth


def draw(
    image: RGBImage,
    regions: AlgorithmResult,
    points: AlgorithmResult | None,
    max_size: int,
    colors: int = 0,
) -> Image.Image:
    """Outlines over a copy scaled to ``max_size``; with ``colors``, a palette PNG.

    The photo is quantised before drawing and the pen colours get palette
    entries of their own, so thin outlines keep their exact colour.
    """
    canvas = Image.fromarray(image, "RGB")
    scale = min(1.0, max_size / max(canvas.size))
    if scale < 1.0:
        canvas = canvas.resize((round(canvas.width * scale), round(canvas.height * scale)))
    pens: dict[str, Any] = {"outline": OUTLINE, "hole": HOLE, "point": POINT}
    if colors:
        canvas = canvas.quantize(colors - len(pens), dither=Image.Dither.NONE)
        palette = canvas.getpalette() or []
        for offset, (key, rgb) in enumerate(list(pens.items())):
            index = colors - len(pens) + offset
            palette[3 * index : 3 * index + 3] = rgb
            pens[key] = index
        canvas.putpalette(palette)
    pen = ImageDraw.Draw(canvas)
    width = max(3, round(4 * max(canvas.size) / 1024))
    for polygon in shape(regions.geometry).geoms if regions.geometry else []:
        exterior = [(x * scale, y * scale) for x, y in polygon.exterior.coords]
        pen.line(exterior, fill=pens["outline"], width=width, joint="curve")
        for interior in polygon.interiors:
            ring = [(x * scale, y * scale) for x, y in interior.coords]
            pen.line(ring, fill=pens["hole"], width=width, joint="curve")
    if points is not None and points.geometry:
        radius = max(3.0, 4 * scale)
        for x, y in points.geometry["coordinates"]:
            box = (x * scale - radius, y * scale - radius, x * scale + radius, y * scale + radius)
            pen.ellipse(box, outline=pens["point"], width=max(1, width - 1))
    return canvas


def run(name: str, image: RGBImage, overrides: dict[str, Any]) -> AlgorithmResult:
    algorithm = load_registry().get(name)
    if algorithm is None or not algorithm.cpu_bound:
        sys.exit(f"algorithm {name!r} is not installed as a CPU-bound algorithm")
    parameters = algorithm.Parameters().load(overrides)
    result = algorithm.run(image, parameters, lambda fraction: None)
    assert isinstance(result, AlgorithmResult)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", type=Path, help="input image, or where to write the composite")
    parser.add_argument("out", type=Path, help="PNG to write")
    parser.add_argument("--composite", action="store_true", help="build a test tile first")
    parser.add_argument("--size", type=int, default=1024, help="composite side length")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--points", action="store_true", help="also draw poi_detection points")
    parser.add_argument("--params", default="{}", help="roi_detection parameters as JSON")
    parser.add_argument("--max-size", type=int, default=1024, help="longest side of the PNG")
    parser.add_argument(
        "--colors", type=int, default=0, help="palette size for a small PNG (0: full colour)"
    )
    args = parser.parse_args()

    truth = None
    if args.composite:
        image, truth = composite_tile(args.size, args.seed)
        Image.fromarray(image).save(args.image)
    else:
        image = np.asarray(Image.open(args.image).convert("RGB"))

    started = time.perf_counter()
    regions = run("roi_detection", image, json.loads(args.params))
    elapsed = time.perf_counter() - started
    points = run("poi_detection", image, {}) if args.points else None
    draw(image, regions, points, args.max_size, args.colors).save(args.out, optimize=True)

    report = {k: round(v, 4) for k, v in regions.measurements.items()}
    report["seconds"] = round(elapsed, 3)
    if truth is not None:
        report["iou_vs_truth"] = round(_iou(regions, truth), 4)
    print(json.dumps(report))


def _iou(result: AlgorithmResult, truth: npt.NDArray[np.bool_]) -> float:
    """Rasterise the polygons (holes included) and compare with the truth mask."""
    height, width = truth.shape
    mask = Image.new("1", (width, height), 0)
    pen = ImageDraw.Draw(mask)
    for polygon in shape(result.geometry).geoms if result.geometry else []:
        pen.polygon([tuple(p) for p in polygon.exterior.coords], fill=1)
        for interior in polygon.interiors:
            pen.polygon([tuple(p) for p in interior.coords], fill=0)
    found = np.asarray(mask, bool)
    union = np.logical_or(found, truth).sum()
    return float(np.logical_and(found, truth).sum() / union) if union else 1.0


if __name__ == "__main__":
    main()
