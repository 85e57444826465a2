"""Options, declared once: the request's fields (`vitlens.request`) and each analysis' options.

Every field and option is an `Option` (name, type, default, choices or range, help, the modes it
applies to, the server limit that caps it). That one declaration drives:
  * validation: `parse_options` turns user values (CLI strings, URL strings, JSON) into typed
    values or raises a one-line `VitlensError` (CLI exit 2, dashboard error box);
  * the CLI: `vitlens run NAME --help` and `vitlens analyses NAME` list the options;
  * the dashboard: `ui.options` draws a widget per option (default, range, choices, help);
  * README's option tables (`markdown_table`; a test checks README against it);
  * the URL and `vitlens run` arguments (`Option.text`, the inverse of `parse`);
  * a shared server's limits (`Option.limit`, read by `vitlens.jobs.limits`).
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from .errors import VitlensError

NONE_WORDS = ("none", "null", "")
TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")
INT_LIMIT = 2 ** 62  # beyond this an integer option is a typo (seed 1e20), not a value
MAX_LIST_ITEMS = 256  # a list option without a declared bound (its count's HIGH is the bound otherwise)


@dataclass(frozen=True)
class Limit:
    """A shared server's cap on an option: environment variable ENV, DEFAULT when it is unset. The
    CLI computing on the user's own machine is not capped; queued jobs are (`vitlens.jobs.limits`)."""

    env: str
    default: int


@dataclass(frozen=True)
class Option:
    """One analysis option. TYPE is bool, int, float or str; NULLABLE options also take None
    ("none" on the command line); APPLIES maps another option's name to the values under which this
    one matters (`{"what": ("spectrum",)}`); elsewhere it is ignored and reset to its default."""

    name: str
    type: type
    default: Any
    help: str
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    nullable: bool = False
    applies: Mapping[str, tuple] = field(default_factory=dict)
    list_of: type | None = None  # also accepts a list of these (e.g. noise frequencies): at most HIGH items, no repeats
    path: bool = False           # names a weight file or folder: the cache key covers its size and time
    limit: Limit | None = None   # a shared server's cap (`vitlens.jobs.limits`)
    none_words: tuple = ()       # more words that mean None (samples: "all")
    pattern: str | None = None   # text options: a full-match regular expression
    check: Callable[[Any], Any] | None = None  # a further check of the parsed value (raises VitlensError)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def applies_to(self, values: Mapping[str, Any]) -> bool:
        return all(values.get(other) in allowed for other, allowed in self.applies.items())

    def parse(self, value: Any) -> Any:
        out = self._parse(value)
        if self.check is not None and out is not None:
            self.check(out)
        return out

    def _parse(self, value: Any) -> Any:
        """VALUE as this option's type, checked against its choices and range."""
        if self.type is dict:  # a JSON object; empty text is {}
            return _to_object(value, self.flag)
        if isinstance(value, str) and self.nullable and value.strip().lower() in self.none_words:
            return None
        if isinstance(value, str) and value.strip().lower() in NONE_WORDS and (self.nullable or value == ""):
            if self.nullable:
                return None
            raise VitlensError(f"{self.flag} needs a value")
        if value is None:
            if self.nullable:
                return None
            raise VitlensError(f"{self.flag} needs a value")
        if self.list_of is not None:
            if isinstance(value, str) and value.strip().startswith("["):
                try:
                    value = json.loads(value)
                except ValueError:
                    raise VitlensError(f"{self.flag}: cannot read the list {value!r}") from None
            if isinstance(value, (list, tuple)):
                if not value:
                    raise VitlensError(f"{self.flag}: the list is empty")
                most = int(self.high) if self.high is not None else MAX_LIST_ITEMS
                if len(value) > most:
                    raise VitlensError(f"{self.flag}: the list has {len(value)} entries, at most {most}")
                items = [self._scalar(v, self.list_of, checked=False) for v in value]
                if len(set(items)) != len(items):
                    raise VitlensError(f"{self.flag}: the list repeats an entry "
                                       f"({next(v for v in items if items.count(v) > 1)!r}); name each once")
                return items
        return self._scalar(value, self.type)

    def _scalar(self, value: Any, kind: type, checked: bool = True) -> Any:
        if kind is bool:
            out = _to_bool(value, self.flag)
        elif kind is int:
            out = _to_int(value, self.flag)
        elif kind is float:
            out = _to_float(value, self.flag)
        else:
            if not isinstance(value, str):
                raise VitlensError(f"{self.flag} must be text, got {value!r}")
            out = value.strip()
            if checked and self.pattern and not re.fullmatch(self.pattern, out):
                raise VitlensError(f"{self.flag}: {value!r} is not a valid value ({self.help})")
        if not checked:  # list items: the analysis checks them
            return out
        if self.choices and out not in self.choices:
            raise VitlensError(f"{self.flag} must be one of {', '.join(map(str, self.choices))}, got {value!r}")
        if kind in (int, float):
            if self.low is not None and out < self.low:
                raise VitlensError(f"{self.flag} must be at least {_number(self.low)}, got {_number(out)}")
            if self.high is not None and out > self.high:
                raise VitlensError(f"{self.flag} must be at most {_number(self.high)}, got {_number(out)}")
        return out

    def describe(self) -> str:
        """The default and range or choices, for help texts."""
        parts = [f"default {self.show(self.default)}"]
        if self.choices:
            parts.append("one of " + "|".join(map(str, self.choices)))
        elif self.low is not None or self.high is not None:
            lo = "" if self.low is None else _number(self.low)
            hi = "" if self.high is None else _number(self.high)
            parts.append(f"range [{lo}, {hi}]")
        if self.applies:
            parts.append("for " + ", ".join(f"{k}={'|'.join(map(str, v))}" for k, v in self.applies.items()))
        return "; ".join(parts)

    def text(self, value: Any) -> str:
        """VALUE as the text `parse` reads back (URL parameters, `vitlens run` arguments)."""
        if value is None:
            return self.none_words[0] if self.none_words else "none"
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (dict, list, tuple)):
            return json.dumps(value, sort_keys=isinstance(value, dict))
        return repr(value) if isinstance(value, float) else str(value)

    @staticmethod
    def show(value: Any) -> str:
        if value is None:
            return "none"
        if isinstance(value, bool):
            return "true" if value else "false"
        return f"{value:g}" if isinstance(value, float) else str(value)


def _number(x: float) -> str:
    """A bound or value for an error message: whole numbers in full (2**53 - 1, not 9.0072e+15)."""
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e18 else f"{x:g}"


def _to_object(value: Any, flag: str) -> dict:
    """A JSON object (a dict, or its JSON text; empty text is {})."""
    if isinstance(value, str):
        if not value.strip():
            return {}
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise VitlensError(f"{flag} is not valid JSON ({err.msg} at column {err.colno}): {value[:80]}") from None
        except RecursionError:
            raise VitlensError(f"{flag} is nested too deeply") from None
    if not isinstance(value, dict):
        raise VitlensError(f"{flag} must be a JSON object like '{{\"num_classes\": 10}}'")
    return value


def _to_bool(value: Any, flag: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS + FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    raise VitlensError(f"{flag} must be true or false, got {value!r}")


def _to_float(value: Any, flag: str) -> float:
    if isinstance(value, bool):
        raise VitlensError(f"{flag} must be a number, got {value!r}")
    try:
        out = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError, OverflowError):
        raise VitlensError(f"{flag} must be a number, got {value!r}") from None
    if not math.isfinite(out):
        raise VitlensError(f"{flag} must be a finite number, got {value!r}")
    return out


def _to_int(value: Any, flag: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        out = value
    else:
        number = _to_float(value, flag)
        if number != int(number):
            raise VitlensError(f"{flag} must be a whole number, got {value!r}")
        out = int(number)
    if abs(out) > INT_LIMIT:
        raise VitlensError(f"{flag} is out of range: {value!r}")
    return out


def parse_options(options: Sequence[Option], values: Mapping[str, Any], what: str) -> dict:
    """Defaults overlaid with VALUES, each parsed by its declaration; options that do not apply
    under the chosen modes are reset to their defaults (they cannot change the numbers, so they
    must not change the cache key either). WHAT names the analysis in errors."""
    by_name = {o.name: o for o in options}
    unknown = sorted(set(values) - set(by_name))
    if unknown:
        flags = ", ".join("--" + u.replace("_", "-") for u in unknown)
        raise VitlensError(f"{what} has no option {flags}; `vitlens run {what} --help` lists them")
    out = {o.name: o.default for o in options}
    for name, value in values.items():
        out[name] = by_name[name].parse(value)
    for o in options:
        if o.applies and not o.applies_to(out):
            out[o.name] = o.default
    return out


def markdown_table(options: Sequence[Option]) -> str:
    """README's option table of one analysis."""
    lines = ["| option | default | values | what it does |", "|---|---|---|---|"]
    for o in options:
        if o.choices:
            values = " \\| ".join(map(str, o.choices))
        elif o.low is not None or o.high is not None:
            values = f"{'' if o.low is None else _number(o.low)} … {'' if o.high is None else _number(o.high)}"
        else:
            values = o.type.__name__
        if o.nullable:
            values += f" or {o.none_words[0] if o.none_words else 'none'}"
        doc = o.help.replace("|", "\\|")
        if o.applies:
            doc += " (" + ", ".join(f"{k} {'/'.join(map(str, v))}" for k, v in o.applies.items()) + ")"
        if o.limit:
            doc += f"; a shared server allows at most {o.limit.default} (`{o.limit.env}`)"
        lines.append(f"| `{o.flag}` | {o.show(o.default)} | {values} | {doc} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- shared declarations

def convention_option(paper: str, standard: str) -> Option:
    """The one rule for conventions: `--convention paper` (default) reproduces the authors' code
    (github xxxnell/how-do-vits-work); `standard` is the cleaner variant. Every Result records it."""
    return Option("convention", str, "paper", f"paper: {paper}; standard: {standard}",
                  choices=("paper", "standard"))


def loss_options(weight_decay: float, applies: Mapping[str, tuple] | None = None) -> list[Option]:
    """The training loss' options (soft targets, weight decay, augmentation), shared by the Hessian
    and the loss landscape."""
    applies = dict(applies or {})
    return [
        Option("weight_decay", float, weight_decay, "weight decay added to the loss", low=0.0, applies=applies),
        Option("label_smoothing", float, 0.0, "label smoothing of the targets", low=0.0, high=1.0, applies=applies),
        Option("mixup", float, 0.0, "mixup alpha (0 = off)", low=0.0, applies=applies),
        Option("cutmix", float, 0.0, "cutmix alpha (0 = off)", low=0.0, applies=applies),
        Option("augment", str, None, "reload the data with this training augmentation", nullable=True,
               choices=("crop_flip", "randaugment"), applies=applies),
    ]
