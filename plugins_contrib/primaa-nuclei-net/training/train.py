"""Train the nucleus-centre network; cross-validate it or export the shipped ONNX model.

Run from the repository root, with torch (CPU) installed beside primaa and this plugin::

    nice -n 19 python plugins_contrib/primaa-nuclei-net/training/train.py final --seed 0
    nice -n 19 python plugins_contrib/primaa-nuclei-net/training/train.py fold 0 --seed 0

``final`` trains on every tile of both dev sets and writes
``primaa_nuclei_net/nuclei_net.onnx``; ``fold K`` trains without fold K (whole slides,
3 folds per set, see ``data.assign_folds``) and saves the heat maps it predicts on the
held-out tiles, which ``evaluate.py`` scores. One thread, so the machine stays shared.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from data import REPO, Tile, assign_folds, load_tiles, sample_patch
from primaa_nuclei_net.scale import DEFAULT_IMAGE_MPP, to_network
from torch import nn

PLUGIN = Path(__file__).resolve().parents[1]
DEV_SETS = [
    REPO.parent / "shared/data/nuclei-dev",
    REPO.parent / "shared/data/nuclei-multiorgan-dev",
]
FOLDS = 3
WIDTHS = (16, 32, 48, 64)
PATCH = 128
BATCH = 12
#: Four pooling steps: the input's sides are padded to a multiple of this.
MULTIPLE = 2 ** (len(WIDTHS) - 1)


def block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class CentreNet(nn.Module):
    """A small U-Net: RGB in [0, 1] at 0.5 µm/px to a nucleus-centre heat map in [0, 1]."""

    def __init__(self, widths: tuple[int, ...] = WIDTHS) -> None:
        super().__init__()
        self.down = nn.ModuleList()
        c_in = 3
        for width in widths:
            self.down.append(block(c_in, width))
            c_in = width
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.up.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.merge.append(block(c_in + width, width))
            c_in = width
        self.head = nn.Conv2d(c_in, 1, 1)
        self.register_buffer("mean", torch.tensor([0.7, 0.5, 0.7]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / 0.2
        skips = []
        for index, layer in enumerate(self.down):
            if index:
                x = nn.functional.max_pool2d(x, 2)
            x = layer(x)
            skips.append(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips[:-1]), strict=True):
            x = merge(torch.cat([up(x), skip], dim=1))
        return torch.sigmoid(self.head(x))


def train(tiles: list[Tile], steps: int, seed: int, log: Path) -> CentreNet:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = CentreNet()
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, 3e-3, total_steps=steps)
    # Tiles drawn in proportion to their area: a 1000 px tile is four 512 px ones.
    weights = np.array([t.image.shape[0] * t.image.shape[1] for t in tiles], dtype=np.float64)
    weights /= weights.sum()
    start, running = time.time(), 0.0
    model.train()
    with log.open("a") as out:
        for step in range(1, steps + 1):
            batch = [
                sample_patch(tiles[i], PATCH, rng) for i in rng.choice(len(tiles), BATCH, p=weights)
            ]
            images = torch.from_numpy(np.stack([b[0] for b in batch]))
            targets = torch.from_numpy(np.stack([b[1] for b in batch]))[:, None]
            predicted = model(images)
            loss = ((predicted - targets) ** 2 * (1.0 + 10.0 * targets)).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            running = 0.98 * running + 0.02 * loss.item() if step > 1 else loss.item()
            if step % 50 == 0 or step == steps:
                print(
                    f"step {step}/{steps} loss {running:.4f} {time.time() - start:.0f} s",
                    file=out,
                    flush=True,
                )
    model.eval()
    return model


def predict(model: CentreNet, image: np.ndarray) -> np.ndarray:
    """Heat map at 0.5 µm/px of a tile at the default 0.25 µm/px (as the plugin does)."""
    small, _, _ = to_network(image, DEFAULT_IMAGE_MPP)
    height, width = small.shape[:2]
    pad_h, pad_w = -height % MULTIPLE, -width % MULTIPLE
    padded = np.pad(small, ((0, pad_h), (0, pad_w), (0, 0)), mode="reflect")
    x = torch.from_numpy(padded.transpose(2, 0, 1)[None].astype(np.float32) / 255.0)
    with torch.no_grad():
        return model(x)[0, 0, :height, :width].numpy()


def export(model: CentreNet, path: Path) -> None:
    example = torch.rand(1, 3, 64, 64)
    torch.onnx.export(
        model,
        (example,),
        str(path),
        input_names=["image"],
        output_names=["heat"],
        dynamic_axes={"image": {2: "height", 3: "width"}, "heat": {2: "height", 3: "width"}},
        opset_version=17,
        dynamo=False,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["fold", "final"])
    parser.add_argument("fold", type=int, nargs="?", default=-1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path("/tmp/primaa-nuclei-net"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    tiles = load_tiles(DEV_SETS)
    if args.mode == "final":
        model = train(tiles, args.steps, args.seed, args.out / "final.log")
        torch.save(model.state_dict(), args.out / "final.pt")
        export(model, PLUGIN / "primaa_nuclei_net" / "nuclei_net.onnx")
        return
    folds = assign_folds(tiles, FOLDS)
    training = [t for t in tiles if folds[t.name] != args.fold]
    model = train(training, args.steps, args.seed, args.out / f"fold{args.fold}.log")
    torch.save(model.state_dict(), args.out / f"fold{args.fold}.pt")
    heat = {t.name: predict(model, t.image) for t in tiles if folds[t.name] == args.fold}
    np.savez_compressed(args.out / f"fold{args.fold}.npz", **heat)


if __name__ == "__main__":
    main()
