"""Memory of decoding a large flat image: the worker's peak RSS over the decoded size.

A flat PNG is decoded whole (the format has no tiles to read apart), so its decoded
size is the floor; what matters is how far above it the worker peaks. Builds an RGB
and an RGBA PNG of ``--megapixels``, decodes each with ``decode_image`` in a fresh
process (``VmHWM``: a child's ``ru_maxrss`` starts at its parent's), and prints the peak above the
process's baseline as a multiple of the decoded array. ``--base DIR`` runs another
checkout's decoder beside this one, in alternation.

    python -m bench.decode_memory [--quick] [--megapixels MP] [--base DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from bench.harness import REPO, bench_env, print_table, scratch_dir

_MEASURE = """
import json, sys, time, pathlib
from primaa.imaging.decode import decode_image

def status_kb(key):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(key + ":"))

before = status_kb("VmRSS")
started = time.perf_counter()
array = decode_image(pathlib.Path(sys.argv[1]), max_pixels=10**10)
seconds = time.perf_counter() - started
extra = (status_kb("VmHWM") - before) * 1024
print(json.dumps({"decoded": array.nbytes, "extra": extra, "seconds": seconds}))
"""


def build_png(path: Path, side: int, mode: str) -> None:
    """A PNG with structure in every row (fast to write, not a flat colour)."""
    rows, cols = np.ogrid[0:side, 0:side]
    base = ((cols * 7 + rows * 3) % 256).astype(np.uint8)
    layers = [base, base[::-1], (base // 2 + 60).astype(np.uint8)]
    if mode == "RGBA":
        layers.append(((cols // 64 + rows // 64) % 2 * 255).astype(np.uint8))
    Image.fromarray(np.stack(layers, axis=-1), mode).save(path, compress_level=1)


def measure(path: Path, repo: Path) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path)],
        check=True,
        capture_output=True,
        text=True,
        # ``-c`` puts the working directory first on sys.path: the checkout's own.
        cwd=repo,
        env=bench_env(repo=repo),
    )
    result: dict[str, float] = json.loads(done.stdout)
    return result


def run(megapixels: float, base: Path | None) -> None:
    side = int((megapixels * 1e6) ** 0.5)
    checkouts = {"primaa": REPO, **({"base": base} if base is not None else {})}
    rows = []
    with scratch_dir("decode") as tmp:
        for mode in ("RGB", "RGBA"):
            path = tmp / f"{mode}.png"
            build_png(path, side, mode)
            for name, repo in checkouts.items():
                found = measure(path, repo)
                rows.append(
                    [
                        f"{side}x{side} {mode} PNG",
                        name,
                        f"{found['decoded'] / 1e6:,.0f}",
                        f"{found['extra'] / 1e6:,.0f}",
                        f"{found['extra'] / found['decoded']:.2f}x",
                        f"{found['seconds']:.1f}",
                    ]
                )
    print_table(
        f"Decoding a flat image: peak RSS above the process's own, {megapixels:g} MP",
        ["image", "decoder", "decoded MB", "peak extra MB", "peak / decoded", "seconds"],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 MP instead of 64")
    parser.add_argument("--megapixels", type=float, default=None)
    parser.add_argument("--base", type=Path, default=None, help="another checkout, side by side")
    args = parser.parse_args()
    run(args.megapixels or (16.0 if args.quick else 64.0), args.base)


if __name__ == "__main__":
    main()
