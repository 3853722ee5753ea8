"""The "during training" plot: a point per evaluation, and series with equal scores stay visible."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from PIL import Image

from mme5.eval.report import draw_history, plot_history


def test_a_point_per_evaluation_and_overlapping_series_distinguishable(tmp_path):
    history = [{"step": s, "A/Overall": 10.0 + s, "B/Class": 10.0 + s, "C": 5.0} for s in (0, 50, 100)]
    history.append({"step": 150, "A/Overall": 170.0, "C": float("nan")})
    fig, ax = plt.subplots()
    lines = draw_history(ax, history)
    plt.close(fig)
    by_label = {line.get_label(): line for line in lines}
    assert list(by_label["A/Overall"].get_xdata()) == [0, 50, 100, 150]
    assert list(by_label["B/Class"].get_xdata()) == [0, 50, 100]
    assert list(by_label["C"].get_xdata()) == [0, 50, 100]  # NaN scores are not points
    # A and B have the same scores: their markers differ and neither hides the other completely
    assert by_label["A/Overall"].get_marker() != by_label["B/Class"].get_marker()
    assert all(line.get_alpha() is not None and line.get_alpha() < 1 for line in lines)
    png = plot_history(history, tmp_path / "h.png")
    assert Image.open(png).size[0] > 0
    assert [p.name for p in tmp_path.iterdir()] == ["h.png"]
