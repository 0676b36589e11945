"""The point-matching scorer on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from primaa.evaluation import MatchCounts, match_points, micro_average, score_points


def test_two_predictions_near_one_truth_give_one_tp_and_one_fp() -> None:
    counts = score_points([[10.0, 10.0], [12.0, 10.0]], [[11.0, 10.0]], radius=8)
    assert counts == MatchCounts(tp=1, fp=1, fn=0)


def test_matching_is_optimal_not_greedy() -> None:
    # Greedy nearest-first pairs p0 with t1 and leaves t0 alone; the optimum pairs both.
    predicted = [[0.0, 0.0], [10.0, 0.0]]
    truth = [[-7.0, 0.0], [3.0, 0.0]]
    assert score_points(predicted, truth, radius=8) == MatchCounts(tp=2, fp=0, fn=0)


def test_radius_boundary_is_inclusive() -> None:
    assert score_points([[0.0, 0.0]], [[8.0, 0.0]], radius=8).tp == 1
    assert score_points([[0.0, 0.0]], [[8.001, 0.0]], radius=8) == MatchCounts(0, 1, 1)


def test_coincident_points_match() -> None:
    assert score_points([[5.0, 5.0]], [[5.0, 5.0]], radius=1).tp == 1


def test_empty_inputs() -> None:
    assert score_points([], [[1.0, 1.0]], radius=8) == MatchCounts(0, 0, 1)
    assert score_points([[1.0, 1.0]], np.zeros((0, 2)), radius=8) == MatchCounts(0, 1, 0)
    empty = score_points([], [], radius=8)
    assert (empty.precision, empty.recall, empty.f1) == (1.0, 1.0, 1.0)


def test_match_indices_pair_each_point_once() -> None:
    rng = np.random.default_rng(1)
    truth = rng.uniform(0, 500, size=(300, 2))
    predicted = np.concatenate([truth + rng.normal(0, 2, truth.shape), truth[:50] + 3.0])
    pred_idx, true_idx = match_points(predicted, truth, radius=8)
    assert len(set(pred_idx.tolist())) == len(pred_idx)
    assert len(set(true_idx.tolist())) == len(true_idx)
    assert np.all(np.hypot(*(predicted[pred_idx] - truth[true_idx]).T) <= 8)
    # As many pairs as a dense assignment over all points finds.
    distances = np.hypot(*(predicted[:, None, :] - truth[None, :, :]).transpose(2, 0, 1))
    cost = np.where(distances <= 8, distances, 1e6)
    rows, cols = linear_sum_assignment(cost)
    assert len(pred_idx) == int(np.sum(cost[rows, cols] < 1e6))


def test_precision_recall_f1_and_micro_average() -> None:
    total = micro_average([MatchCounts(8, 2, 0), MatchCounts(0, 0, 8)])
    assert total == MatchCounts(8, 2, 8)
    assert total.precision == pytest.approx(0.8)
    assert total.recall == pytest.approx(0.5)
    assert total.f1 == pytest.approx(16 / 26)


def test_rejects_bad_shapes_and_radius() -> None:
    with pytest.raises(ValueError, match="shape"):
        score_points([1.0, 2.0, 3.0], [[1.0, 1.0]], radius=8)
    with pytest.raises(ValueError, match="radius"):
        score_points([[1.0, 1.0]], [[1.0, 1.0]], radius=-1)
