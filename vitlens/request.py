"""The request: what a user asks vitlens to compute (`JobSpec`), its fields declared once.

`REQUEST_OPTIONS` declares every field but `analysis` and `params` (whose options each analysis
declares) as an `Option`: name, type, default, bounds, help and the shared server's limit. The CLI's
`vitlens run` flags, the dashboard's sidebar and URL, findings' and Compare's links, the worker's
torchrun arguments and the server's limits all read this one declaration, so a value is accepted or
refused the same way everywhere.

This module sits at the bottom of the package: it imports only `options` and `errors`.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

from .errors import VitlensError
from .options import Limit, Option

# The largest integer a browser's number input holds exactly (Number.MAX_SAFE_INTEGER): the
# dashboard's seed widget can show every seed the CLI takes.
MAX_SEED = 2 ** 53 - 1

REQUEST_OPTIONS: tuple[Option, ...] = (
    Option("model", str, "demo_resnet", "timm:NAME or a registered name (`vitlens models`)",
           pattern=r"[A-Za-z0-9_.:\-]{1,200}"),
    Option("model_args", dict, {}, 'architecture arguments as a JSON object, e.g. {"num_classes": 10, "img_size": 32}'),
    Option("checkpoint", str, None, "weights to load (.pt/.pth/.pth.tar/.safetensors; read as data)", nullable=True,
           path=True),
    Option("dataset", str, "digits", "digits (embedded), cifar10, cifar100, synthetic, folder:PATH or tensors:PATH "
           "(`vitlens datasets`)"),
    Option("split", str, "test", "which split of the data set", choices=("test", "train")),
    Option("samples", int, 256, "how many samples (a seeded subset), or all", low=1, high=10_000_000, nullable=True,
           none_words=("all",), limit=Limit("VITLENS_MAX_SAMPLES", 50000)),
    Option("batch_size", int, 64, "batch size", low=1, high=1 << 16),
    Option("seed", int, 0, "seed of everything random (subset, directions, probes)", low=0, high=MAX_SEED),
    Option("device", str, "auto", "auto, cpu, cuda, cuda:N or mps", pattern=r"auto|cpu|mps|cuda(:\d{1,2})?"),
)
REQUEST_FIELDS = tuple(o.name for o in REQUEST_OPTIONS)
# Architecture arguments a shared server caps (`vitlens.jobs.limits`), besides the fields' own limits.
MODEL_ARG_LIMITS = {"num_classes": Limit("VITLENS_MAX_CLASSES", 1000)}


def request_option(name: str) -> Option:
    return next(o for o in REQUEST_OPTIONS if o.name == name)


def _default(name: str):
    default = request_option(name).default
    return field(default_factory=dict) if isinstance(default, dict) else default


@dataclass
class JobSpec:
    """Everything that decides an analysis' numbers (and so its cache key). The defaults are
    `REQUEST_OPTIONS`' (a test checks they agree)."""

    analysis: str
    model: str = "demo_resnet"
    model_args: dict = field(default_factory=dict)
    checkpoint: str | None = None
    dataset: str = "digits"
    split: str = "test"
    samples: int | None = 256
    batch_size: int = 64
    seed: int = 0
    device: str = "auto"
    params: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any) -> "JobSpec":
        """A JobSpec from `to_dict`'s output (a queue message, a job record); nothing else is taken."""
        names = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or set(data) - names or "analysis" not in data:
            raise VitlensError("not a vitlens request (JobSpec)")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "JobSpec":
        try:
            return cls.from_dict(json.loads(text))
        except ValueError:
            raise VitlensError("not a vitlens request (JobSpec)") from None


def parse_request(values: Mapping[str, Any], analysis: str = "", params: dict | None = None) -> JobSpec:
    """A JobSpec from user VALUES (CLI text, URL text or typed values) of the request's fields, each
    parsed and checked by its declaration; missing fields take their defaults."""
    unknown = sorted(set(values) - set(REQUEST_FIELDS))
    if unknown:
        raise VitlensError(f"unknown request field(s): {', '.join(unknown)}")
    typed = {o.name: o.parse(values[o.name]) if o.name in values else o.default for o in REQUEST_OPTIONS}
    if isinstance(typed["model_args"], dict):
        typed["model_args"] = dict(typed["model_args"])
    return JobSpec(analysis=analysis, params=dict(params or {}), **typed)


def request_query(spec: JobSpec, skip_defaults: tuple[str, ...] = ("model_args", "checkpoint")) -> dict:
    """SPEC's fields as URL parameters (text `parse_request` reads back). The fields in SKIP_DEFAULTS
    are left out at their default (an empty model_args, no checkpoint), as the dashboard writes them."""
    query = {}
    for o in REQUEST_OPTIONS:
        value = getattr(spec, o.name)
        if o.name in skip_defaults and value == o.default:
            continue
        query[o.name] = o.text(value)
    return query


def request_arguments(spec: JobSpec) -> list[str]:
    """`vitlens run ANALYSIS ...` arguments that give back SPEC (`cli.spec_from_args`): the worker's
    torchrun launch."""
    args = ["run", spec.analysis]
    for o in REQUEST_OPTIONS:
        value = getattr(spec, o.name)
        if value is None and o.nullable and not o.none_words:
            continue  # absent = none
        args += [o.flag, o.text(value)]
    return args + ["--params", json.dumps(spec.params, sort_keys=True)]
