"""The paired statistics and the target check of benchmarks/bench_train_proof.py (README,
"The proof protocol"), on hand-computed values."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_train_proof as proof


def test_mean_std_is_the_sample_std() -> None:
    # values 1, 2, 4: mean 7/3, squared deviations 16/9 + 1/9 + 25/9 = 42/9, / (3 - 1) = 7/3
    mean, std = proof.mean_std([1.0, 2.0, 4.0])
    assert mean == pytest.approx(7 / 3)
    assert std == pytest.approx(math.sqrt(7 / 3))
    assert proof.mean_std([0.25]) == (0.25, 0.0)
    with pytest.raises(ValueError):
        proof.mean_std([])


def test_paired_diff_is_over_per_seed_differences_not_the_two_spreads() -> None:
    # both arms vary a lot across seeds, but the arm is exactly 0.1 better in every seed
    base = [0.2, 0.5, 0.8]
    arm = [0.3, 0.6, 0.9]
    mean, std = proof.paired_diff(arm, base)
    assert mean == pytest.approx(0.1)
    assert std == pytest.approx(0.0, abs=1e-12)
    # differences 0.1, -0.1, 0.3: mean 0.1, sample std sqrt((0 + 0.04 + 0.04) / 2) = 0.2
    mean, std = proof.paired_diff([0.3, 0.4, 1.1], base)
    assert mean == pytest.approx(0.1)
    assert std == pytest.approx(0.2)
    with pytest.raises(ValueError, match="3 values vs 2"):
        proof.paired_diff([0.1, 0.2, 0.3], [0.1, 0.2])


def test_target_needs_five_points_of_rare_iou_and_at_most_one_point_of_miou_lost() -> None:
    base_rare, base_miou = [0.10, 0.20, 0.30], [0.70, 0.72, 0.74]
    # +6 points rare (paired mean), mIoU -0.5 point: met
    met, d_rare, d_miou = proof.meets_target(
        [0.16, 0.26, 0.36], [0.695, 0.715, 0.735], base_rare, base_miou
    )
    assert met and d_rare == pytest.approx(6.0) and d_miou == pytest.approx(-0.5)
    # exactly +5 points and -1 point: met (the bounds are inclusive)
    met, d_rare, d_miou = proof.meets_target(
        [0.15, 0.25, 0.35], [0.69, 0.71, 0.73], base_rare, base_miou
    )
    assert met and d_rare == pytest.approx(5.0) and d_miou == pytest.approx(-1.0)
    # +6 points rare but mIoU -2 points: not met
    assert not proof.meets_target([0.16, 0.26, 0.36], [0.68, 0.70, 0.72], base_rare, base_miou)[0]
    # +4 points rare, mIoU up: not met
    assert not proof.meets_target([0.14, 0.24, 0.34], [0.8, 0.8, 0.8], base_rare, base_miou)[0]
    # a NaN IoU (class never predicted nor present) never meets the target
    assert not proof.meets_target([math.nan, 0.9, 0.9], [0.8, 0.8, 0.8], base_rare, base_miou)[0]


def test_fmt_signs_differences() -> None:
    assert proof.fmt((0.1234, 0.0051)) == "0.123 ± 0.005"
    assert proof.fmt((-0.02, 0.01), signed=True) == "-0.020 ± 0.010"
    assert proof.fmt((0.02, 0.01), signed=True) == "+0.020 ± 0.010"
