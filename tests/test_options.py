"""One declaration per analysis: parsing, and that the CLI, the dashboard and README use exactly the
declared defaults; per-page, per-session dashboard state."""
import math
import threading
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from vitlens.analyses import get_analysis, list_analyses
from vitlens.cli import build_parser, spec_from_args
from vitlens.errors import VitlensError
from vitlens.options import Option, parse_options
from vitlens.readme import options_section

ROOT = Path(__file__).resolve().parents[1]
PAGES = {"hessian": "pages/1_Hessian.py", "landscape": "pages/2_Loss_landscape.py", "fourier": "pages/3_Fourier.py",
         "noise": "pages/6_Noise_robustness.py"}


@pytest.fixture(autouse=True)
def _roots(tmp_path, monkeypatch):
    monkeypatch.setenv("VITLENS_CHECKPOINT_ROOT", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("VITLENS_DATA_ROOT", str(tmp_path / "data"))


# ----------------------------------------------------------------------------- parsing

@pytest.mark.parametrize("option, raw, want", [
    (Option("k", int, 1, "", low=1), "5", 5),
    (Option("k", int, 1, "", low=1), 7.0, 7),
    (Option("k", int, 1, "", low=1), "1e3", 1000),
    (Option("x", float, 0.0, ""), "2.5", 2.5),
    (Option("b", bool, False, ""), "yes", True),
    (Option("b", bool, True, ""), "false", False),
    (Option("b", bool, True, ""), 0, False),
    (Option("s", str, None, "", nullable=True, choices=("a",)), "none", None),
    (Option("s", str, "a", "", choices=("a", "b")), "b", "b"),
    (Option("f", int, 3, "", list_of=float), "[0, 0.5]", [0.0, 0.5]),
])
def test_option_parses(option, raw, want):
    assert option.parse(raw) == want


@pytest.mark.parametrize("option, raw, needle", [
    (Option("tol", float, 0.01, "", low=1e-12), "NaN", "finite"),
    (Option("tol", float, 0.01, "", low=1e-12), "-1", "at least"),
    (Option("weight_decay", float, 0.0, ""), "Infinity", "finite"),
    (Option("seed", int, 0, ""), "1e20", "out of range"),
    (Option("bins", int, 15, "", low=1), "0", "at least 1"),
    (Option("bins", int, 15, "", low=1), "2.5", "whole number"),
    (Option("reuse_prefix", bool, True, ""), "maybe", "true or false"),
    (Option("what", str, "a", "", choices=("a", "b")), "c", "one of a, b"),
    (Option("grid", int, 21, "", high=501), "100000", "at most 501"),
    (Option("k", int, 1, ""), None, "needs a value"),
])
def test_option_refuses_with_one_line(option, raw, needle):
    with pytest.raises(VitlensError) as err:
        option.parse(raw)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_unknown_option_and_applies_rule():
    options = [Option("what", str, "a", "", choices=("a", "b")), Option("only_b", int, 1, "", applies={"what": ("b",)})]
    with pytest.raises(VitlensError, match="no option --nope"):
        parse_options(options, {"nope": 1}, "demo")
    # an option that does not apply is reset to its default: it cannot change numbers or cache keys
    assert parse_options(options, {"what": "a", "only_b": 9}, "demo")["only_b"] == 1
    assert parse_options(options, {"what": "b", "only_b": 9}, "demo")["only_b"] == 9


# ----------------------------------------------------------------------------- one declaration everywhere

@pytest.mark.parametrize("analysis", [a.name for a in list_analyses()])
def test_cli_uses_the_declared_defaults(analysis):
    declared = get_analysis(analysis)
    for o in declared.options:
        assert o.parse(o.default) == o.default if o.default is not None else o.nullable, o.name
    args = build_parser().parse_args(["run", analysis, "--model", "demo_resnet"])
    spec = spec_from_args(args)
    assert spec.params == {}  # nothing given: the engine fills the declaration's defaults
    assert declared.parse(spec.params) == declared.defaults
    # every option is a flag, and a given value arrives parsed by the same declaration
    for o in declared.options:
        assert o.flag in build_parser()._subparsers._group_actions[0].choices["run"]._subparsers._group_actions[
            0].choices[analysis].format_help()


def test_cli_values_go_through_the_declaration():
    args = build_parser().parse_args(["run", "hessian", "--model", "demo_resnet", "--what", "topk", "--top-k", "3",
                                      "--train-mode"])
    params = get_analysis("hessian").parse(spec_from_args(args).params)
    assert params["top_k"] == 3 and params["what"] == "topk" and params["train_mode"] is True


def test_readme_option_tables_match_the_declarations():
    assert options_section() in (ROOT / "README.md").read_text()


def _open(page, query=None):
    at = AppTest.from_file(str(ROOT / page), default_timeout=60)
    for key, value in {"samples": "32", "batch_size": "16", "model": "timm:no_such_model_for_tests", **(query or {})}.items():
        at.query_params[key] = value  # an unknown non-demo model: nothing autoruns, the widgets still draw
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.mark.parametrize("analysis", sorted(PAGES))
def test_dashboard_widgets_show_the_declared_defaults(analysis):
    at = _open(PAGES[analysis])
    declared = get_analysis(analysis)
    drawn = {}
    for kind in ("number_input", "selectbox", "checkbox", "text_input"):
        for w in at.sidebar.get(kind):
            if w.key and w.key.startswith(f"w_{analysis}."):
                drawn[w.key.split(".", 1)[1]] = w.value
    assert drawn, "the page draws its options from the declaration"
    for name, value in drawn.items():
        if name not in declared.defaults:
            continue  # a view control of the page (plot kind, log scale), not an analysis option
        default = declared.option(name).default
        assert value == default or (isinstance(default, float) and math.isclose(value, default)), name


def test_landscape_then_hessian_submits_the_hessian_defaults():
    """weight_decay set on the Loss landscape page must not reach the Hessian page's request."""
    at = _open("app.py")  # multipage navigation starts from the main script
    at.switch_page(PAGES["landscape"]).run()
    at.sidebar.number_input(key="w_landscape.weight_decay").set_value(0.3).run()
    assert at.query_params["weight_decay"] in ("0.3", ["0.3"])
    at.switch_page(PAGES["hessian"]).run()
    assert not at.exception
    assert at.sidebar.number_input(key="w_hessian.weight_decay").value == 0.0
    assert at.query_params.get("weight_decay") in ("0.0", ["0.0"])
    assert "grid" not in at.query_params  # nothing of the landscape page in the Hessian link
    at.switch_page(PAGES["landscape"]).run()
    assert at.sidebar.number_input(key="w_landscape.weight_decay").value == 0.3  # each page keeps its own


def test_two_sessions_never_see_each_others_parameters():
    """Two sessions on different pages rerun concurrently (the server runs each in its own thread):
    neither's URL ever holds the other page's options."""
    own = {"landscape": {"grid", "range"}, "noise": {"frequencies", "eps"}}
    bad = []

    def hammer(analysis, other):
        at = _open(PAGES[analysis])
        for _ in range(15):
            at.run()
            keys = set(at.query_params)
            if keys & own[other]:
                bad.append((analysis, sorted(keys)))
        if not own[analysis] <= set(at.query_params):
            bad.append((analysis, "its own options are missing from its URL", sorted(at.query_params)))
    threads = [threading.Thread(target=hammer, args=("landscape", "noise")),
               threading.Thread(target=hammer, args=("noise", "landscape"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad, bad[:3]
