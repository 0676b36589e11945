"""Scoring of point detections against true points (e.g. nucleus centres).

A prediction is a true positive when it is matched, one-to-one, to a true point
within ``radius``; the matching maximises the number of pairs and then
minimises their total distance, so two predictions near one nucleus give one
true positive and one false positive. Pairs further apart than ``radius`` are
never considered, and the assignment is solved per connected group of nearby
points, which keeps it fast on images with thousands of points.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt
from scipy import sparse
from scipy.optimize import linear_sum_assignment
from scipy.sparse import csgraph
from scipy.spatial import cKDTree


@dataclasses.dataclass(frozen=True, slots=True)
class MatchCounts:
    """True positives, false positives and false negatives; add them to micro-average."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, other: MatchCounts) -> MatchCounts:
        return MatchCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def precision(self) -> float:
        """1.0 when nothing was predicted: no prediction was wrong."""
        predicted = self.tp + self.fp
        return self.tp / predicted if predicted else 1.0

    @property
    def recall(self) -> float:
        """1.0 when there was nothing to find."""
        actual = self.tp + self.fn
        return self.tp / actual if actual else 1.0

    @property
    def f1(self) -> float:
        """``2TP / (2TP + FP + FN)``; 1.0 when both sets are empty."""
        denominator = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / denominator if denominator else 1.0


def _as_points(points: npt.ArrayLike) -> npt.NDArray[np.float64]:
    array = np.asarray(points, dtype=np.float64)
    if array.size == 0:
        return np.zeros((0, 2))
    if array.ndim != 2 or array.shape[1] != 2:
        raise ValueError(f"expected points of shape (N, 2), got {array.shape}")
    return array


def match_points(
    predicted: npt.ArrayLike, truth: npt.ArrayLike, radius: float
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Indices ``(pred_idx, true_idx)`` of the matched pairs, each point used at most once.

    A pair at exactly ``radius`` counts as a match.
    """
    if radius < 0:
        raise ValueError("radius must not be negative")
    pred, true = _as_points(predicted), _as_points(truth)
    empty = np.zeros(0, dtype=np.intp)
    if len(pred) == 0 or len(true) == 0:
        return empty, empty
    pairs = cKDTree(pred).sparse_distance_matrix(
        cKDTree(true), max_distance=radius, output_type="ndarray"
    )
    if len(pairs) == 0:
        return empty, empty
    rows = pairs["i"].astype(np.intp)
    cols = pairs["j"].astype(np.intp)
    dist = pairs["v"].astype(np.float64)
    n_pred, n_true = len(pred), len(true)
    graph = sparse.coo_matrix(
        (np.ones(len(rows)), (rows, cols + n_pred)), shape=(n_pred + n_true,) * 2
    )
    _, labels = csgraph.connected_components(graph, directed=False)
    pair_label = labels[rows]
    order = np.argsort(pair_label, kind="stable")
    rows, cols, dist, pair_label = rows[order], cols[order], dist[order], pair_label[order]
    bounds = np.flatnonzero(np.diff(pair_label)) + 1
    matched_pred: list[npt.NDArray[np.intp]] = []
    matched_true: list[npt.NDArray[np.intp]] = []
    # Unmatchable pairs cost more than any set of matchable ones, so the solver first
    # maximises the number of matches, then minimises their distance.
    for r, c, d in zip(
        np.split(rows, bounds), np.split(cols, bounds), np.split(dist, bounds), strict=True
    ):
        if len(r) == 1:
            matched_pred.append(r)
            matched_true.append(c)
            continue
        ur, r_local = np.unique(r, return_inverse=True)
        uc, c_local = np.unique(c, return_inverse=True)
        forbidden = 1.0 + 2.0 * radius * (len(ur) + len(uc))
        cost = np.full((len(ur), len(uc)), forbidden)
        cost[r_local, c_local] = d
        ri, ci = linear_sum_assignment(cost)
        keep = cost[ri, ci] < forbidden
        matched_pred.append(ur[ri[keep]])
        matched_true.append(uc[ci[keep]])
    return (
        np.concatenate(matched_pred).astype(np.intp),
        np.concatenate(matched_true).astype(np.intp),
    )


def score_points(predicted: npt.ArrayLike, truth: npt.ArrayLike, radius: float) -> MatchCounts:
    """TP, FP and FN of one image's predictions against its true points."""
    n_pred, n_true = len(_as_points(predicted)), len(_as_points(truth))
    pred_idx, _ = match_points(predicted, truth, radius)
    tp = len(pred_idx)
    return MatchCounts(tp=tp, fp=n_pred - tp, fn=n_true - tp)


def micro_average(counts: Iterable[MatchCounts]) -> MatchCounts:
    """Pool the counts of several images, so that images with more points weigh more."""
    total = MatchCounts()
    for item in counts:
        total = total + item
    return total
