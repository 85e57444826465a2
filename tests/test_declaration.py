"""One declaration: the request's fields and everything an analysis is (options, lane, sharding,
limits, page, figures) are declared once, and every surface reads them."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from vitlens.analyses import ANALYSES, Figure, Page, list_analyses, pages, register_analysis
from vitlens.cli import build_parser, main, spec_from_args
from vitlens.data import load_data
from vitlens.errors import VitlensError
from vitlens.jobs import Limits, Queue, lane_of
from vitlens.models import load_model
from vitlens.options import Limit, Option
from vitlens.readme import options_section
from vitlens.request import MAX_SEED, REQUEST_OPTIONS, JobSpec, parse_request, request_option
from vitlens.result import Result

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- the request's fields

def test_jobspec_defaults_are_the_declared_ones():
    spec = JobSpec(analysis="evaluate")
    for option in REQUEST_OPTIONS:
        assert getattr(spec, option.name) == option.default, option.name
    assert [o.name for o in REQUEST_OPTIONS] == [f for f in spec.to_dict() if f not in ("analysis", "params")]


# (field, text, accepted): each value is accepted or refused alike by the CLI, the URL parser, the
# dashboard's sidebar (a link) and a shared server's limits
CASES = [
    ("seed", str(2 ** 40), True),
    ("seed", str(MAX_SEED + 1), False),
    ("seed", "-1", False),
    ("batch_size", "5000", True),
    ("batch_size", "70000", False),
    ("samples", "20000000", False),
    ("split", "val", False),
    ("device", "cuda:1", True),
    ("device", "gpu", False),
]


def _cli_error(field: str, text: str, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["run", "evaluate", request_option(field).flag, text])
    assert exit_info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("field,text,accepted", CASES)
def test_a_request_value_is_accepted_or_refused_the_same_way_everywhere(field, text, accepted, capsys, tmp_path,
                                                                        monkeypatch):
    from streamlit.testing.v1 import AppTest
    monkeypatch.setenv("VITLENS_CACHE_DIR", str(tmp_path / "cache"))
    typed = int(text) if text.lstrip("-").isdigit() else text
    at = AppTest.from_file(str(ROOT / "pages" / "4_Feature_variance.py"), default_timeout=60)
    at.query_params[field] = text
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    warnings = [w.value for w in at.sidebar.warning]
    if accepted:
        spec = spec_from_args(build_parser().parse_args(["run", "evaluate", request_option(field).flag, text]))
        assert getattr(spec, field) == typed
        assert getattr(parse_request({field: text}), field) == typed
        Limits().check(spec)  # no server limit in the way
        assert at.query_params[field] == text and not warnings, warnings
    else:
        cli = _cli_error(field, text, capsys)
        with pytest.raises(VitlensError) as url_error:
            parse_request({field: text})
        assert str(url_error.value) in cli  # the same one-line reason
        default = request_option(field).text(request_option(field).default)
        assert at.query_params[field] == default
        assert len(warnings) == 1 and str(url_error.value).split(" ")[0].replace("-", "\\-") in warnings[0], warnings


def test_a_server_limit_is_declared_with_its_field():
    over = JobSpec(analysis="evaluate", samples=60000)
    spec_from_args(build_parser().parse_args(["run", "evaluate", "--samples", "60000"]))  # the CLI computes it
    with pytest.raises(VitlensError, match="VITLENS_MAX_SAMPLES"):
        Limits().check(over)  # a shared server does not (default 50000)
    assert request_option("samples").limit == Limit("VITLENS_MAX_SAMPLES", 50000)
    assert "VITLENS_MAX_SAMPLES" in options_section()  # and README says so


# ----------------------------------------------------------------------------- a toy analysis

TOY = "toy_logit_mean"


def _toy(ctx, params: dict) -> Result:
    """Mean logit per class over the data, times SCALE."""
    total, count = None, 0
    with torch.no_grad():
        for x, _ in ctx.loader():
            logits = ctx.model(x.to(ctx.device)) * params["scale"]
            total = logits.sum(0) if total is None else total + logits.sum(0)
            count += len(x)
    means = (total / count).cpu().numpy()
    return Result(pd.DataFrame({"cls": np.arange(len(means)), "mean_logit": means}), {"analysis": TOY})


@pytest.fixture
def toy():
    register_analysis(TOY, "mean logit per class (a test analysis)",
                      [Option("scale", float, 1.0, "multiply the logits", low=0.0, high=10.0,
                              limit=Limit("VITLENS_MAX_TOY_SCALE", 5))],
                      lane="interactive", page=Page("Toy view", "Toy", 42, caption="a toy"),
                      figures=[Figure("bar", {"x": "cls", "y": "mean_logit"})])(_toy)
    yield ANALYSES[TOY]
    ANALYSES.pop(TOY)


def test_a_new_analysis_is_one_declaration(toy, tmp_path, monkeypatch, capsys):
    """Registered once, the toy analysis is in the CLI (run, help, list), the page list, its lane, the
    limits, README's tables and its figures; its numbers are a plain forward pass's."""
    monkeypatch.setenv("VITLENS_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "toy.csv"
    assert main(["run", TOY, "--samples", "32", "--device", "cpu", "--scale", "2", "--out", str(out)]) == 0
    model = load_model("demo_resnet", pretrained=True).eval()
    data = load_data("digits", split="test", samples=32, seed=0, model=model)
    with torch.no_grad():
        x = torch.stack([data[i][0] for i in range(len(data))])
        expected = (model(x) * 2).mean(0).numpy()
    np.testing.assert_allclose(pd.read_csv(out)["mean_logit"], expected, rtol=1e-5, atol=1e-6)

    with pytest.raises(SystemExit):
        main(["run", TOY, "--help"])
    assert "--scale" in capsys.readouterr().out
    assert main(["analyses"]) == 0 and TOY in capsys.readouterr().out

    assert [a.name for a in pages()][-1] == TOY  # order 42: last in the page list (landing page, navigation)
    spec = JobSpec(analysis=TOY, params={"scale": 6})
    assert lane_of(spec) == "interactive"
    queue = Queue(str(tmp_path / "queue" / "jobs.db"))
    queue.put(spec, "job1", 0, 0)
    assert queue.lanes["interactive"].count() == 1 and queue.lanes["heavy"].count() == 0
    with pytest.raises(VitlensError, match="VITLENS_MAX_TOY_SCALE"):
        Limits().check(spec)

    readme = options_section()
    assert f"#### `{TOY}`" in readme and "`--scale`" in readme
    assert f"| `{TOY}` | interactive | no | Toy view (`/Toy`) | `bar` |" in readme

    result = Result(pd.read_csv(out), {"analysis": TOY, "params": {"scale": 2.0}})
    (figure,) = result.figures()
    np.testing.assert_allclose(figure.data[0].y, expected, rtol=1e-5, atol=1e-6)

    spec_ = importlib.util.spec_from_file_location("update_pages", ROOT / "scripts" / "update_pages.py")
    update_pages = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(update_pages)
    assert update_pages.main(check=True) == 1  # its page file is missing: the script writes the stub
    assert "pages/42_Toy.py is missing" in capsys.readouterr().err
    assert f"ui.analysis_page({TOY!r})" in update_pages.stub(TOY)


def test_every_declared_page_has_its_file_and_every_page_file_a_declaration():
    declared = {a.page.file for a in pages()}
    files = {f"pages/{p.name}" for p in (ROOT / "pages").glob("*.py")}
    assert declared <= files
    assert files - declared == {"pages/8_Compare.py", "pages/9_Jobs.py"}  # not analyses: views of several
    spec_ = importlib.util.spec_from_file_location("update_pages", ROOT / "scripts" / "update_pages.py")
    update_pages = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(update_pages)
    assert update_pages.main(check=True) == 0


def test_every_declared_figure_is_a_plot_and_every_option_it_names_exists():
    from vitlens import plots
    for analysis in list_analyses():
        for figure in analysis.figures:
            assert callable(getattr(plots, figure.plot, None)), (analysis.name, figure.plot)
    with pytest.raises(ValueError, match="undeclared options"):
        register_analysis("broken", "x", [], figures=[Figure("bar", when={"nope": (1,)})])(_toy)
    with pytest.raises(ValueError, match="lane"):
        register_analysis("broken", "x", [], lane="fast")(_toy)
    assert "broken" not in ANALYSES


def test_json_round_trip_of_a_request():
    spec = parse_request({"model_args": '{"num_classes": 10}', "samples": "all", "seed": "3"}, "fourier",
                         {"resolution": 8})
    assert spec.samples is None and spec.model_args == {"num_classes": 10}
    assert JobSpec.from_json(spec.to_json()) == spec
    with pytest.raises(VitlensError):
        JobSpec.from_json(json.dumps({"analysis": "x", "evil": 1}))


def test_a_page_computes_the_request_id_once_per_run(tmp_path, monkeypatch):
    """The request id stats every weight file and walks a folder data set: once per run of a page
    (it was computed three times in the UI and twice more in the engine)."""
    from streamlit.testing.v1 import AppTest

    from vitlens.engine import request_id
    from vitlens.ui import jobview
    monkeypatch.setenv("VITLENS_CACHE_DIR", str(tmp_path / "cache"))
    calls = []

    def counted(spec):
        calls.append(spec.analysis)
        return request_id(spec)
    monkeypatch.setattr(jobview, "request_id", counted)
    at = AppTest.from_file(str(ROOT / "pages" / "4_Feature_variance.py"), default_timeout=60)
    at.run()  # nothing cached: the page looks in the cache, finds no job, submits one
    assert not at.exception, [e.value for e in at.exception]
    assert calls == ["variance"]
    at.run()
    assert calls == ["variance"] * 2


def test_every_measurement_runs_without_tf32(monkeypatch, tmp_path):
    """On an H200 cuDNN's default TF32 convolutions moved a lesion's NLL by 8e-5 and AlterNet's Fourier
    amplitudes by 8e-4 (benchmarks/gpu_check.py): every analysis through the engine, the Hessian's,
    the landscape's and the feature passes' contexts turn TF32 off, and give the caller's setting back."""
    from vitlens.engine import run
    from vitlens.features import Reducer, collect
    from vitlens.hessian import hessian_mode
    from vitlens.landscape.offsets import eval_mode

    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    seen = []

    def record(*_):
        seen.append((conv.fp32_precision, matmul.fp32_precision))

    def probe(ctx, params):
        record()
        return Result(pd.DataFrame({"x": [0.0]}), {"analysis": "probe_precision"})

    register_analysis("probe_precision", "records the float32 settings (a test analysis)", [])(probe)
    monkeypatch.setenv("VITLENS_CACHE_DIR", str(tmp_path / "cache"))
    saved = conv.fp32_precision, matmul.fp32_precision
    model = load_model("demo_resnet", pretrained=True)
    try:
        conv.fp32_precision, matmul.fp32_precision = "tf32", "tf32"  # a user's process that asked for TF32
        run(JobSpec(analysis="probe_precision", model="demo_resnet", samples=8, device="cpu"), use_cache=False)
        with hessian_mode(model):
            record()
        with eval_mode(model):
            record()
        hook = model.fc.register_forward_hook(record)
        collect(model, [(torch.zeros(2, 3, 32, 32), torch.zeros(2, dtype=torch.long))], [Reducer()])
        hook.remove()
        assert seen == [("ieee", "ieee")] * 4
        assert (conv.fp32_precision, matmul.fp32_precision) == ("tf32", "tf32")
    finally:
        conv.fp32_precision, matmul.fp32_precision = saved
        ANALYSES.pop("probe_precision")
