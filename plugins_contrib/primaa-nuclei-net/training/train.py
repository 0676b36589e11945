"""Train the nucleus-centre network; cross-validate it or export the shipped ONNX model.

Run from the repository root, with torch (CPU) installed beside primaa and this plugin::

    nice -n 19 python plugins_contrib/primaa-nuclei-net/training/train.py final --seed 0
    nice -n 19 python plugins_contrib/primaa-nuclei-net/training/train.py fold 0 --seed 0

``final`` trains on every tile of both dev sets and writes
``primaa_nuclei_net/nuclei_net.onnx``; ``fold K`` trains without fold K (whole slides,
3 folds per set, see ``data.assign_folds``) and saves the heat maps it predicts on the
held-out tiles, which ``evaluate.py`` scores. One thread, so the machine stays shared.

``--teachers DIR [DIR ...]`` distils: the networks the same mode saved in those folders
(``foldK.pt`` or ``final.pt``, trained with other seeds) predict every training tile, and
the target mixes their mean heat map with the annotations (``data.ANNOTATION_WEIGHT``).
The shipped network is the student of two seeds' networks: an ensemble's accuracy at one
network's cost.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from data import REPO, STRIDE, Tile, assign_folds, load_tiles, sample_patch
from primaa_nuclei_net.detector import INPUT_MEAN, INPUT_SPREAD
from primaa_nuclei_net.scale import DEFAULT_IMAGE_MPP, to_network
from torch import nn

PLUGIN = Path(__file__).resolve().parents[1]
DEV_SETS = [
    REPO.parent / "shared/data/nuclei-dev",
    REPO.parent / "shared/data/nuclei-multiorgan-dev",
]
FOLDS = 3
#: Channels of the stride-2 stem, then of each level (1, 2, 4 and 8 µm/px).
STEM = 16
WIDTHS = (8, 16, 32, 48)
PATCH = 128
BATCH = 12
#: The stem and three poolings: the input's sides are padded to a multiple of this.
MULTIPLE = STRIDE * 2 ** (len(WIDTHS) - 1)


def conv(c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, kernel, stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


class CentreNet(nn.Module):
    """RGB in [0, 1] at 0.5 µm/px to a nucleus-centre heat map in [0, 1] at 1 µm/px.

    A 4x4 stride-2 stem takes the input to 1 µm/px at once: a level at the input's full
    resolution cost most of the previous network's time and a centre needs no finer grid
    (the peaks are refined below a pixel). Then a small U-Net: two convolutions per level
    going down, one per level coming back up.
    """

    def __init__(self, stem: int = STEM, widths: tuple[int, ...] = WIDTHS) -> None:
        super().__init__()
        # Kernel 4, stride 2, padding 1: output pixel q is centred on input pixel 2q + 0.5.
        self.stem = nn.Sequential(*conv(3, stem, kernel=4, stride=STRIDE))
        self.down = nn.ModuleList()
        c_in = stem
        for width in widths:
            self.down.append(nn.Sequential(*conv(c_in, width), *conv(width, width)))
            c_in = width
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.up.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.merge.append(nn.Sequential(*conv(c_in + width, width)))
            c_in = width
        self.head = nn.Conv2d(c_in, 1, 1)
        self.register_buffer("mean", torch.tensor(INPUT_MEAN).view(1, 3, 1, 1))
        #: Off for export: the plugin normalises the input itself (see ``INPUT_MEAN``).
        self.normalise = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalise:
            x = (x - self.mean) / INPUT_SPREAD
        x = self.stem(x)
        skips = []
        for index, layer in enumerate(self.down):
            if index:
                x = nn.functional.max_pool2d(x, 2)
            x = layer(x)
            skips.append(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips[:-1]), strict=True):
            x = merge(torch.cat([up(x), skip], dim=1))
        return torch.sigmoid(self.head(x))


HeatMaps = dict[str, np.ndarray]


def train(
    model: CentreNet,
    tiles: list[Tile],
    steps: int,
    seed: int,
    log: Path,
    teacher: HeatMaps | None = None,
) -> CentreNet:
    rng = np.random.default_rng(seed)
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
                sample_patch(
                    tiles[i], PATCH, rng, None if teacher is None else teacher[tiles[i].name]
                )
                for i in rng.choice(len(tiles), BATCH, p=weights)
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
    """Heat map at 1 µm/px of a tile at the default 0.25 µm/px (as the plugin does)."""
    small, _, _ = to_network(image, DEFAULT_IMAGE_MPP)
    height, width = small.shape[:2]
    pad_h, pad_w = -height % MULTIPLE, -width % MULTIPLE
    padded = np.pad(small, ((0, pad_h), (0, pad_w), (0, 0)), mode="reflect")
    x = torch.from_numpy(padded.transpose(2, 0, 1)[None].astype(np.float32) / 255.0)
    with torch.no_grad():
        heat = model(x)[0, 0].numpy()
    return heat[: -(-height // STRIDE), : -(-width // STRIDE)]


def teacher_heat(folders: list[Path], saved: str, tiles: list[Tile]) -> HeatMaps | None:
    """The mean heat map of the networks ``folders`` hold as ``saved``, on every tile."""
    if not folders:
        return None
    teachers = []
    for folder in folders:
        teacher = CentreNet()
        teacher.load_state_dict(torch.load(folder / saved))
        teachers.append(teacher.eval())
    return {t.name: np.mean([predict(n, t.image) for n in teachers], axis=0) for t in tiles}


def export(model: CentreNet, path: Path) -> None:
    model.normalise = False
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
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--out", type=Path, default=Path("/tmp/primaa-nuclei-net"))
    parser.add_argument("--stem", type=int, default=STEM, help="to screen other widths")
    parser.add_argument("--widths", default=",".join(map(str, WIDTHS)), help="4 levels")
    parser.add_argument(
        "--onnx",
        type=Path,
        default=PLUGIN / "primaa_nuclei_net" / "nuclei_net.onnx",
        help="where final writes the network (default: the plugin's shipped model)",
    )
    parser.add_argument(
        "--teachers", type=Path, nargs="*", default=[], help="--out folders of other seeds"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    tiles = load_tiles(DEV_SETS)
    widths = tuple(int(w) for w in args.widths.split(","))
    if len(widths) != len(WIDTHS):
        parser.error(f"--widths: {len(WIDTHS)} levels")
    torch.manual_seed(args.seed)  # the initial weights
    net = CentreNet(args.stem, widths)
    if args.mode == "final":
        teacher = teacher_heat(args.teachers, "final.pt", tiles)
        model = train(net, tiles, args.steps, args.seed, args.out / "final.log", teacher)
        torch.save(model.state_dict(), args.out / "final.pt")
        export(model, args.onnx)
        return
    folds = assign_folds(tiles, FOLDS)
    training = [t for t in tiles if folds[t.name] != args.fold]
    teacher = teacher_heat(args.teachers, f"fold{args.fold}.pt", training)
    log = args.out / f"fold{args.fold}.log"
    model = train(net, training, args.steps, args.seed, log, teacher)
    torch.save(model.state_dict(), args.out / f"fold{args.fold}.pt")
    heat = {t.name: predict(model, t.image) for t in tiles if folds[t.name] == args.fold}
    np.savez_compressed(args.out / f"fold{args.fold}.npz", **heat)


if __name__ == "__main__":
    main()
