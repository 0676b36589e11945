"""TileMerger: each object kept once across seams, in level-0 coordinates."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from primaa.imaging.slides import (
    Tile,
    TileMerger,
    in_core,
    plan_tiles,
    polygon_centres,
    seam_duplicates,
    to_level0,
)


def _seen_by(tile: Tile, world: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The points of the working plane a tile's pixels cover, in its own coordinates."""
    inside = (
        (world[:, 0] >= tile.x - 0.5)
        & (world[:, 0] < tile.x + tile.width - 0.5)
        & (world[:, 1] >= tile.y - 0.5)
        & (world[:, 1] < tile.y + tile.height - 0.5)
    )
    result: npt.NDArray[np.float64] = world[inside] - [tile.x, tile.y]
    return result


@pytest.mark.parametrize("downsample", [1.0, 2.0, 1.002])
def test_points_on_seams_and_in_overlaps_are_kept_exactly_once(downsample: float) -> None:
    size = (round(1000 * downsample), round(700 * downsample))
    tiles = plan_tiles(size, downsample=downsample, border=40, tile_size=330)
    # Pixel centres are whole numbers, so pixels, cores and seams start half a unit before.
    seams_x = sorted({t.core[0] - 0.5 for t in tiles})
    seams_y = sorted({t.core[1] - 0.5 for t in tiles})
    rng = np.random.default_rng(0)
    # Exactly on every seam and crossing, a hair either side, and anywhere.
    on_seams = [(x, y) for x in seams_x for y in seams_y]
    hairs = [(x + d, y + 0.5) for x in seams_x[1:] for y in seams_y for d in (-1e-9, 1e-9)]
    anywhere = rng.uniform(0, 1, (500, 2)) * (1000, 700) - 0.5
    world = np.concatenate([on_seams, hairs, anywhere]).astype(np.float64)
    merger = TileMerger()
    seen = 0
    for tile in tiles:
        local = _seen_by(tile, world)
        seen += len(local)
        kept = merger.add_points(tile, local)
        assert np.array_equal(kept, np.flatnonzero(in_core(tile, local)))
    # Points in the overlaps were seen by two or four tiles...
    assert seen > len(world) * 1.2
    # ...and each is kept once, where it is on the slide.
    centres = merger.centres()
    assert len(merger) == len(world)
    order = np.lexsort((centres[:, 1], centres[:, 0]))
    expected = (world + 0.5) * downsample - 0.5
    assert np.allclose(centres[order], expected[np.lexsort((expected[:, 1], expected[:, 0]))])
    assert len(merger.tile_indices()) == len(world)


def test_a_seam_point_belongs_to_the_tile_after_it() -> None:
    left, right = plan_tiles((200, 100), downsample=1.0, border=10, tile_size=120)
    assert left.core == (0, 0, 100, 100)
    assert right.core == (100, 0, 200, 100)
    seam = np.array([[99.5, 50.0]])
    assert not in_core(left, seam - [left.x, left.y]).any()
    assert in_core(right, seam - [right.x, right.y]).all()


def test_to_level0_scales_tile_coordinates() -> None:
    tile = Tile(3, x=100, y=50, width=10, height=10, core=(105, 55, 110, 60), downsample=4.0)
    # Pixel (0, 0) of the tile averages level-0 pixels 400-403 by 200-203: centre 401.5, 201.5.
    assert to_level0(tile, [[0.0, 0.0], [2.5, 1.0]]).tolist() == [[401.5, 201.5], [411.5, 205.5]]
    assert to_level0(tile, []).shape == (0, 2)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        to_level0(tile, [1.0, 2.0, 3.0])


def test_polygons_are_kept_by_the_core_holding_their_centroid() -> None:
    left, right = plan_tiles((200, 100), downsample=2.0, border=10, tile_size=70)
    # A square straddling the seam (x = 49.5 working px), centroid right of it...
    square = np.array([[40.0, 10.0], [60.5, 10.0], [60.5, 30.0], [40.0, 30.0]])
    # ...and an L-shape whose centroid is far from its vertex mean.
    ell = np.array([[5.0, 5.0], [45.0, 5.0], [45.0, 9.0], [9.0, 9.0], [9.0, 45.0], [5.0, 45.0]])
    merger = TileMerger()
    kept_left = merger.add_polygons(left, [square - [left.x, 0], ell - [left.x, 0]])
    kept_right = merger.add_polygons(right, [square - [right.x, 0]])
    assert kept_left.tolist() == [1]
    assert kept_right.tolist() == [0]
    polygons = merger.polygons()
    assert np.allclose(polygons[0], ell * 2.0 + 0.5)
    assert np.allclose(polygons[1], square * 2.0 + 0.5)
    assert np.allclose(merger.centres()[1], [50.25 * 2.0 + 0.5, 20.0 * 2.0 + 0.5])
    assert merger.tile_indices().tolist() == [0, 1]


def test_polygon_centres() -> None:
    far = 1e7
    square = np.array([[0.0, 0.0], [4.0, 0.0], [4.0, 2.0], [0.0, 2.0]]) + far
    clockwise = square[::-1]
    line = np.array([[0.0, 0.0], [2.0, 2.0], [4.0, 4.0]])
    centres = polygon_centres([square, clockwise, line, [[3.0, 3.0]]])
    assert centres.tolist() == [[far + 2.0, far + 1.0]] * 2 + [[2.0, 2.0], [3.0, 3.0]]
    with pytest.raises(ValueError, match="no vertices"):
        polygon_centres([[]])


def test_a_merger_holds_one_kind_of_object() -> None:
    (tile,) = plan_tiles((10, 10), downsample=1.0)
    merger = TileMerger()
    merger.add_points(tile, [[1.0, 1.0]])
    with pytest.raises(ValueError, match="holds points"):
        merger.add_polygons(tile, [[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])
    assert TileMerger().centres().shape == (0, 2)


def test_seam_duplicates_marks_one_of_two_tiles_centres_for_one_object() -> None:
    left, right = plan_tiles((200, 100), downsample=1.0, border=10, tile_size=120)
    merger = TileMerger()
    # One object on the seam (x = 99.5) whose centre each tile puts on its own side,
    # two objects 5 px apart across it, and two close ones of the left tile alone.
    merger.add_points(left, np.array([[98.9, 20.0], [97.0, 50.0], [97.0, 80.0], [98.5, 81.0]]))
    merger.add_points(right, np.array([[100.2, 20.4], [102.0, 50.0]]) - [right.x, 0])
    centres = merger.centres()
    assert len(centres) == 6
    marked = seam_duplicates(centres, merger.tile_indices(), [left, right], radius=3.0)
    # The left one is nearer its core's edge (0.6 px against 0.7).
    assert marked.tolist() == [True, False, False, False, False, False]
    assert not seam_duplicates(centres, merger.tile_indices(), [left, right], radius=0.0).any()
