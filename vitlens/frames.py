"""Reductions of Result frames that several layers read (the analyses' summaries, the plots, the
claims): one definition each, pure pandas."""
from __future__ import annotations

import pandas as pd


def high_frequency(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per block of a `fourier` frame: the row at its highest frequency, whose
    `relative_log_amplitude` is Fig 8's y value (Park & Kim 2022)."""
    last = frame.sort_values(["block", "frequency"]).groupby("block", sort=True).tail(1)
    return last.reset_index(drop=True)
