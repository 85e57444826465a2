"""The analyses, one module each: ``fn(ctx: Context, params: dict) -> Result`` registered with
`register_analysis` (`vitlens.declarations`: the registry and what a declaration holds). An analysis
reaches outside itself only through its `vitlens.context.Context`; `vitlens.engine.run` computes it.
"""
from ..declarations import (ANALYSES, LANES, Analysis, Figure, Memory, Page, get_analysis, list_analyses,  # noqa: F401
                            pages, register_analysis)
