"""`Result`: what every analysis returns — tidy data plus a small metadata dict.

The frame is long-format (one row per measured value) so that plots, CSV/Parquet export and the
compare view all read the same thing. Results serialise to bytes as data (Parquet + JSON), never
as pickles, so a cache entry cannot carry code.
"""
from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import VitlensError

_MAGIC = b"VLRS1\n"
_VIEWS = None  # what draws Results (`vitlens.figures` registers itself on import)


def _views():
    if _VIEWS is None:
        raise VitlensError("no views are registered to draw Results: import vitlens (or vitlens.figures) first")
    return _VIEWS


def json_safe(value: Any) -> Any:
    """Make metadata JSON-safe: numpy scalars, tuples, paths and non-finite floats."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


@dataclass
class Result:
    """Tidy result of one analysis: `frame` (long format) and `meta` (spec, timings, versions)."""

    frame: pd.DataFrame
    meta: dict = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        """Serialise as data: a JSON header line, then Parquet bytes of the frame."""
        buf = io.BytesIO()
        self.frame.to_parquet(buf, index=False)
        header = json.dumps(json_safe(self.meta), sort_keys=True).encode()
        return _MAGIC + header + b"\n" + buf.getvalue()

    def figures(self) -> list:
        """This Result's figures (Plotly), as its analysis declares them, in order (drawn by the views
        that registered with `Result.draw_with`: `vitlens.figures`)."""
        return _views().figures(self)

    def figure(self):
        """The main figure (the first declared), or None for an analysis without figures."""
        drawn = self.figures()
        return drawn[0] if drawn else None

    def _repr_mimebundle_(self, include=None, exclude=None):
        """Jupyter shows a Result as its main figure (interactive, offline)."""
        figure = self.figure()
        bundle = {} if figure is None else _views().mimebundle(figure)
        return dict(bundle, **{"text/plain": repr(self)})

    @staticmethod
    def draw_with(views) -> None:
        """Register VIEWS (an object with `figures(result)` and `mimebundle(figure)`): the views layer
        draws Results; Result itself is data and imports nothing above it."""
        global _VIEWS
        _VIEWS = views

    def __repr__(self) -> str:
        spec = self.meta.get("spec") or {}
        what = self.meta.get("analysis", "?")
        of = f" of {spec['model']} on {spec.get('dataset')}" if spec.get("model") else ""
        return f"<vitlens Result {what}{of}: {len(self.frame)} rows x {len(self.frame.columns)} columns>"

    @classmethod
    def from_bytes(cls, blob: bytes) -> "Result":
        if not blob.startswith(_MAGIC):
            raise ValueError("not a vitlens Result")
        rest = blob[len(_MAGIC):]
        header, _, parquet = rest.partition(b"\n")
        meta = json.loads(header)
        frame = pd.read_parquet(io.BytesIO(parquet))
        return cls(frame=frame, meta=meta)

    def save(self, path: str | Path) -> Path:
        """Write the Result; the format follows the suffix (.csv, .parquet, .json)."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".csv", ".parquet", ".json"):
            raise VitlensError(f"--out must end in .csv, .parquet or .json, got '{path.name}'")
        path.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".csv":
            self.frame.to_csv(path, index=False)
            path.with_suffix(path.suffix + ".meta.json").write_text(
                json.dumps(json_safe(self.meta), indent=2, sort_keys=True))
        elif suffix == ".parquet":
            self.frame.to_parquet(path, index=False)
            path.with_suffix(path.suffix + ".meta.json").write_text(
                json.dumps(json_safe(self.meta), indent=2, sort_keys=True))
        else:
            payload = {"meta": json_safe(self.meta),
                       "rows": json.loads(self.frame.to_json(orient="records"))}
            path.write_text(json.dumps(payload, indent=2))
        return path
