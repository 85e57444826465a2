"""Tests for vitlens.landscape.sharpness."""
import pandas as pd
import pytest

from vitlens.landscape import grid_axis, sharpness


def test_sharpness_of_a_known_quadratic():
    xs = grid_axis(9, -1, 1)
    rows = [dict(x=x, y=y, loss=1.0 + 2.0 * x * x + 0.5 * y * y, finite=True) for y in xs for x in xs]
    s = sharpness(pd.DataFrame(rows), radius=0.5)
    assert s["curvature_x"] == pytest.approx(4.0) and s["curvature_y"] == pytest.approx(1.0)
    assert s["centre_loss"] == 1.0 and s["rise_max"] == pytest.approx(2.0 * 0.25)
