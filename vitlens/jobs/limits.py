"""What one request and one session may ask of a shared server.

The caps on a request's values are declared with the values (`Option.limit` on the request's fields
and on each analysis' options, `request.MODEL_ARG_LIMITS` for architecture arguments); this module
reads them and the queue's own caps from the environment. The CLI computing on the user's own
machine is not capped; `JobManager.submit` is.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields

from ..declarations import get_analysis, list_analyses
from .. import budget
from ..errors import VitlensError
from ..options import Limit, Option
from ..request import MODEL_ARG_LIMITS, REQUEST_OPTIONS, JobSpec


def env_number(name: str, default: float, cast=int):
    """An env var as a number (DEFAULT when unset or empty); a bad value is a one-line error."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        return cast(text)
    except ValueError:
        raise VitlensError(f"{name} must be a number, got {text!r}") from None


def limit_value(limit: Limit) -> int:
    return env_number(limit.env, limit.default)


def _refuse(what: str, value, limit: Limit) -> None:
    raise VitlensError(f"{what} {value} is over this server's limit of {limit_value(limit)} ({limit.env}); "
                       "ask for less")


@dataclass
class Limits:
    """The queue's caps (env vars, team defaults); the values' caps come from their declarations."""

    per_session: int = 4        # VITLENS_MAX_JOBS_PER_SESSION: queued + running jobs of one session
    total: int = 50             # VITLENS_MAX_JOBS: queued + running jobs of everyone

    ENV = dict(per_session="VITLENS_MAX_JOBS_PER_SESSION", total="VITLENS_MAX_JOBS")

    @classmethod
    def from_env(cls) -> "Limits":
        limits = cls(**{f.name: env_number(cls.ENV[f.name], f.default) for f in fields(cls)})
        for option in declared_limits():  # a bad value is refused now, not at the first submit
            limit_value(option.limit)
        for limit in MODEL_ARG_LIMITS.values():
            limit_value(limit)
        return limits

    def check(self, spec: JobSpec) -> None:
        """Raise a one-line VitlensError when SPEC asks for more than a shared server allows (its
        values, and the model's size: a build on the meta device, no memory)."""
        budget.check(spec)  # sizes the model on the meta device, then this host's free memory or VITLENS_MAX_MEMORY
        for option in REQUEST_OPTIONS:
            value = getattr(spec, option.name)
            if option.limit and isinstance(value, (int, float)) and value > limit_value(option.limit):
                _refuse(option.name, value, option.limit)
        for name, limit in MODEL_ARG_LIMITS.items():
            value = (spec.model_args or {}).get(name)
            if isinstance(value, (int, float)) and value > limit_value(limit):
                _refuse(name, value, limit)
        analysis = get_analysis(spec.analysis)
        params = analysis.parse(spec.params or {})  # typed by the declaration
        for option in analysis.limited:
            value = params.get(option.name)
            if isinstance(value, (int, float)) and value > limit_value(option.limit):
                _refuse(option.name, value, option.limit)


def declared_limits() -> list[Option]:
    """Every option with a server limit: the request's fields and every analysis' options."""
    return [o for o in REQUEST_OPTIONS if o.limit] + [o for a in list_analyses() for o in a.limited]
