"""The views outside the server: figures from the command line, the notebook API, the HTML report,
W&B export (offline) and the paper's published data as reference Results."""
import base64
import csv
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import vitlens
from vitlens.analyses import list_analyses
from vitlens.cli import main
from vitlens.errors import VitlensError
from vitlens.figures import static_export_browser
from vitlens.request import parse_request

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--samples", "24", "--batch-size", "12", "--device", "cpu"]
# the cheapest options that still draw each analysis' figures
CHEAP = {"hessian": ["--what", "topk", "--top-k", "2"], "landscape": ["--grid", "3"],
         "noise": ["--frequencies", "3"], "findings": ["--models", "demo_resnet,demo_vit", "--minibatches", "1",
                                                       "--minibatch", "8", "--grid", "3", "--noise-frequencies", "2"]}
FINDINGS_SMALL = dict(minibatches=1, minibatch=8, grid=3, noise_frequencies=2)


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    # one cache for the whole module: the report reuses what the figure tests computed
    monkeypatch.setenv("VITLENS_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "exports-cache"))


def exit_code(args: list[str]) -> int:
    """`vitlens ARGS` as a user runs it: argparse refusals exit 2 as SystemExit."""
    try:
        return main(args)
    except SystemExit as stop:
        return stop.code


def plotly_traces(html: str) -> list[dict]:
    """The traces of the first figure in a Plotly HTML file, numeric arrays decoded."""
    match = re.search(r'Plotly\.newPlot\(\s*"[^"]+",\s*(\[.*?\]),\s*\{', html, re.S)
    assert match, "no Plotly.newPlot call"
    traces = json.loads(match.group(1))

    def decode(v):
        if isinstance(v, dict) and "bdata" in v:
            return np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"]).tolist()
        return v
    return [{k: decode(v) for k, v in t.items()} for t in traces]


@pytest.mark.parametrize("analysis", [a.name for a in list_analyses() if a.figures])
def test_figure_of_every_analysis_as_self_contained_html(analysis, tmp_path, capsys):
    html_path, out = tmp_path / "figure.html", tmp_path / "result.csv"
    assert main(["run", analysis, *SMALL, *CHEAP.get(analysis, []), "--figure", str(html_path),
                 "--out", str(out)]) == 0
    html = html_path.read_text()
    assert "<script src=\"http" not in html and "<script src='http" not in html  # opens offline
    assert "plotly.js" in html.lower() or "Plotly.newPlot" in html
    traces = plotly_traces(html)
    assert traces and any(t.get("x") is not None or t.get("z") is not None or t.get("cells") for t in traces)
    assert f"vitlens {vitlens.__version__}" in html and "demo_resnet" in html  # the caption
    if analysis == "variance":  # the plot's data are the Result's
        frame = pd.read_csv(out).sort_values("block")
        assert traces[0]["y"] == pytest.approx(frame["variance"].tolist())
        assert traces[0]["x"] == pytest.approx(frame["depth"].tolist())


MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "pdf": b"%PDF-", "svg": b"<svg"}


@pytest.mark.skipif(static_export_browser() is None,
                    reason="no Chromium for kaleido: sudo apt-get install chromium (scripts/test.sh does)")
def test_static_figures_have_the_right_format(tmp_path):
    for fmt, magic in MAGIC.items():
        folder = tmp_path / fmt
        assert main(["run", "fourier", *SMALL, "--figures", str(folder), "--figure-format", fmt]) == 0
        files = sorted(folder.iterdir())
        assert [f.name for f in files] == [f"fourier_01_fourier_curves.{fmt}", f"fourier_02_fourier_high_frequency.{fmt}"]
        for f in files:
            data = f.read_bytes()
            assert magic in data[:200] and len(data) > 5000, (f, len(data))


def test_a_missing_browser_is_one_line_and_html_still_works(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-chromium"))
    assert main(["run", "variance", *SMALL, "--figure", str(tmp_path / "v.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "need a Chromium" in err and "apt-get install chromium" in err
    assert main(["run", "variance", *SMALL, "--figure", str(tmp_path / "v.html")]) == 0
    assert main(["run", "variance", *SMALL, "--figure", str(tmp_path / "missing" / "v.html")]) == 2
    assert main(["run", "variance", *SMALL, "--figure", str(tmp_path / "v.gif")]) == 2


# ----------------------------------------------------------------------------- the notebook API

def test_run_takes_the_declared_names_and_gives_the_cli_errors(capsys):
    result = vitlens.run("variance", model="demo_vit", samples=24, batch_size=12, device="cpu")
    assert main(["run", "variance", "--model", "demo_vit", *SMALL]) == 0  # the same request: the same numbers
    summary = json.loads(capsys.readouterr().out)
    assert summary["variance"] == pytest.approx(result.meta["summary"]["variance"])
    bundle = result._repr_mimebundle_()
    assert "text/html" in bundle and "application/vnd.plotly.v1+json" in bundle
    for bad, flag in (({"samples": 0}, "--samples"), ({"seed": -1}, "--seed"), ({"split": "val"}, "--split")):
        with pytest.raises(VitlensError) as api_error:
            vitlens.run("variance", **bad)
        with pytest.raises(VitlensError) as url_error:
            parse_request(bad)
        assert str(api_error.value) == str(url_error.value) and flag in str(api_error.value)
        assert exit_code(["run", "variance", flag, str(next(iter(bad.values())))]) == 2
        assert str(api_error.value) in capsys.readouterr().err
    with pytest.raises(VitlensError, match="has no option bogus"):
        vitlens.run("variance", bogus=1)
    with pytest.raises(VitlensError, match="--resolution must be"):
        vitlens.run("fourier", resolution=-1)


def test_compare_overlays_several_results():
    results = [vitlens.run("variance", model=m, samples=24, batch_size=12, device="cpu")
               for m in ("demo_resnet", "demo_vit")]
    fig = vitlens.compare(results, labels=["r", "v"])
    assert [t.name for t in fig.data] == ["r", "v"]
    assert list(fig.data[1].y) == pytest.approx(results[1].frame.sort_values("block")["variance"].tolist())
    with pytest.raises(VitlensError, match="compare overlays"):
        vitlens.compare([results[0], vitlens.reference("paper:vit_ti_cifar100_landscape")])


@pytest.mark.skipif(shutil.which("true") is None, reason="needs a POSIX shell")
def test_the_example_notebook_runs_top_to_bottom(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(ROOT / "examples" / "quickstart.ipynb", as_version=4)
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    shown = [o for o in outputs if o.output_type in ("execute_result", "display_data")]
    assert sum("application/vnd.plotly.v1+json" in o.get("data", {}) for o in shown) >= 3
    assert any("--samples must be at least 1" in o.get("text", "") for o in outputs if o.output_type == "stream")
    assert (tmp_path / "demo_vit_landscape.html").stat().st_size > 100_000


# ----------------------------------------------------------------------------- the report

class _Tables(HTMLParser):
    """The cells of every <table> of an HTML document."""

    def __init__(self):
        super().__init__()
        self.tables, self._row, self._cell = [], None, None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[-1].append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def test_the_report_is_self_contained_and_matches_the_findings_command(tmp_path, capsys):
    out, board = tmp_path / "report.html", tmp_path / "findings.csv"
    options = ["--minibatches", "1", "--minibatch", "8", "--grid", "3", "--noise-frequencies", "2"]
    assert main(["report", "--model", "demo_resnet", "--model", "demo_vit", *SMALL, *options, "--out", str(out)]) == 0
    assert main(["run", "findings", "--models", "demo_resnet,demo_vit", *SMALL, *options, "--out", str(board)]) == 0
    html = out.read_text()
    assert not re.search(r"<script[^>]+src=['\"]?http", html) and "<link" not in html  # no network to open it
    parser = _Tables()
    parser.feed(html)
    header, *rows = parser.tables[0]
    assert header == ["claim", "model", "verdict", "values", "reason", "figure"]
    expected = pd.read_csv(board, keep_default_na=False)
    assert [r[:4] for r in rows] == expected[["claim", "model", "verdict", "values"]].astype(str).values.tolist()
    # one section per analysis per model, each with at least one figure
    for model in ("demo_resnet", "demo_vit"):
        section = html.split(f"<h3 id='model-{model}'>")[1].split("<h3 id='model-")[0]
        for analysis in ("hessian", "landscape", "fourier", "variance", "lesion", "cka", "noise", "evaluate"):
            part = section.split(f"<h4>{analysis}</h4>")[1].split("<h4>")[0]
            assert "Plotly.newPlot" in part, (model, analysis)
    assert "paper: ViT-Ti (CIFAR-100)" in html  # the paper's landscape beside the models'


# ----------------------------------------------------------------------------- W&B

def test_wandb_offline_run_holds_the_table_the_figure_and_the_config(tmp_path, monkeypatch, capsys):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    assert main(["run", "variance", "--model", "demo_vit", *SMALL, "--wandb", "vitlens-test"]) == 0
    # what the CLI's exit does: W&B's service writes the run's record log after `finish` returns (read at
    # once, it held only its 7-byte header in 1 of 8 runs here); its teardown waits for that write
    import wandb
    wandb.teardown()
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    files = [p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file()]
    assert any(re.match(r"files/media/table/table_\d+_\w+\.table\.json", f) for f in files), files
    assert any(re.match(r"files/media/plotly/figure_0_\d+_\w+\.plotly\.json", f) for f in files), files
    # offline, the config travels in the run's record log (synced later): the request as JSON
    log = next(run_dir.glob("run-*.wandb")).read_bytes()
    assert all(part in log for part in (b'"analysis":"variance"', b'"model":"demo_vit"', b'"samples":24'))
    table = json.loads(next(run_dir.glob("files/media/table/*.table.json")).read_text())
    result = vitlens.run("variance", model="demo_vit", samples=24, batch_size=12, device="cpu")  # cached
    column = table["columns"].index("variance")
    assert [row[column] for row in table["data"]] == pytest.approx(result.frame["variance"].tolist())


def test_wandb_missing_is_one_line(monkeypatch, capsys):
    import builtins
    real_import = builtins.__import__

    def no_wandb(name, *args, **kwargs):
        if name == "wandb":
            raise ImportError("No module named 'wandb'")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_wandb)
    assert main(["run", "variance", *SMALL, "--wandb", "p"]) == 2
    assert "pip install 'vitlens[wandb]'" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the paper's data

def _file_rows(name: str) -> list[list[float]]:
    with (ROOT / "vitlens" / "assets" / "paper" / name).open() as handle:
        return [[float(v) for v in row] for row in csv.reader(handle)]


@pytest.mark.parametrize("name,file", [("paper:vit_ti_cifar100_landscape", "cifar100_vit_ti_losslandscape.csv"),
                                       ("paper:resnet50_cifar100_landscape",
                                        "cifar100_resnet_dnn_50_losslandscape.csv")])
def test_reference_data_round_trip_exactly(name, file, tmp_path, capsys):
    rows = _file_rows(file)
    assert len(rows) == 441 and all(len(r) == 19 for r in rows)
    out = tmp_path / "ref.csv"
    assert main(["reference", "show", name, "--out", str(out)]) == 0
    back = pd.read_csv(out)
    assert len(back) == 441
    assert back["x"].tolist() == [r[0] for r in rows] and back["y"].tolist() == [r[1] for r in rows]
    assert back["nll"].tolist() == [r[4] for r in rows] and back["paper_NLL"].tolist() == [r[4] for r in rows]
    assert back["paper_ECSE"].tolist() == [r[18] for r in rows]
    weight_decay = {"paper:vit_ti_cifar100_landscape": 0.05, "paper:resnet50_cifar100_landscape": 5e-4}[name]
    assert back["loss"].tolist() == pytest.approx([r[4] + weight_decay * r[3] for r in rows], rel=1e-15)
    assert sorted(set(back["x"])) == pytest.approx(np.round(np.linspace(-1, 1, 21), 10).tolist())
    assert main(["reference", "list"]) == 0 and name in capsys.readouterr().out
    assert main(["reference", "show", "paper:nope"]) == 2


def test_the_findings_page_builds_and_offers_the_report(tmp_path):
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(str(ROOT / "pages" / "0_Findings.py"), default_timeout=300)
    at.query_params.update(samples="24", batch_size="12", device="cpu", models="demo_resnet,demo_vit",
                           **{k: str(v) for k, v in FINDINGS_SMALL.items()})
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    at.button(key="build_report").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    (download,) = [b for b in at.get("download_button") if b.label == "Download report"]
    assert download is not None
