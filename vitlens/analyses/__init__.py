"""The analyses: one registry. Each module in this package registers one analysis with
`register_analysis`, declaring its options once (`vitlens.options.Option`); `vitlens.engine.run`
computes them."""
from __future__ import annotations

import functools
import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Callable, Sequence

from ..errors import VitlensError
from ..options import Option, parse_options


@dataclass
class Analysis:
    name: str
    fn: Callable
    description: str
    options: tuple[Option, ...] = ()
    # What the 'paper' and 'standard' conventions mean for this analysis (when it has the option),
    # or the one convention it follows.
    conventions: str = ""
    page: str = ""  # the dashboard page that shows it (for links)
    page_options: tuple[str, ...] | None = None  # what that page draws (`ui.options`); None: every option

    @property
    def shown(self) -> list[str]:
        """The options the dashboard page draws, in order."""
        return list(self.page_options) if self.page_options is not None else [o.name for o in self.options]

    @property
    def defaults(self) -> dict:
        return {o.name: o.default for o in self.options}

    def option(self, name: str) -> Option:
        return next(o for o in self.options if o.name == name)

    def parse(self, params: dict) -> dict:
        return parse_options(self.options, params, self.name)

    def convention_of(self, params: dict) -> dict:
        """What every Result records about the convention that made it."""
        return {"name": params.get("convention", "vitlens"), "notes": self.conventions}


ANALYSES: dict[str, Analysis] = {}


def register_analysis(name: str, description: str, options: Sequence[Option] = (), conventions: str = "",
                      page: str = "", page_options: Sequence[str] | None = None):
    names = [o.name for o in options]
    if len(set(names)) != len(names):
        raise ValueError(f"{name}: an option is declared twice")

    def wrap(fn):
        analysis = Analysis(name, fn, description, tuple(options), conventions, page,
                            None if page_options is None else tuple(page_options))
        unknown = set(analysis.shown) - {o.name for o in options}
        if unknown:
            raise ValueError(f"{name}: page_options names undeclared options {sorted(unknown)}")
        ANALYSES[name] = analysis

        @functools.wraps(fn)
        def checked(ctx, params: dict | None = None):
            """Called directly (as a library function), the options are checked and defaulted too."""
            return fn(ctx, analysis.parse(params or {}))
        return checked
    return wrap


def list_analyses() -> list[Analysis]:
    """Every analysis; each module in this package registers its own on import."""
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
    return list(ANALYSES.values())


def get_analysis(name: str) -> Analysis:
    list_analyses()
    if name not in ANALYSES:
        raise VitlensError(f"unknown analysis '{name}'; available: {', '.join(ANALYSES)}")
    return ANALYSES[name]
