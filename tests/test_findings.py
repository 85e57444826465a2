"""The findings scoreboard: each rule on constructed cases with a known answer, the README table of the
shipped demos recomputed from their Results, and the Findings page."""
import re
import time
from dataclasses import replace
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn

from vitlens import claims as F
from vitlens import links
from vitlens.analyses import findings
from vitlens.readme import findings_table
from vitlens.analyses import get_analysis, list_analyses
from vitlens.context import Context
from vitlens.engine import JobSpec, request_id
from vitlens.progress import Progress
from vitlens.result import Result

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- a fixed blur is low-pass

class _Blur(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.blur = nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False)  # depthwise [1 2 1]^T [1 2 1] / 16
        kernel = torch.tensor([1.0, 2.0, 1.0])
        self.blur.weight.data[:] = (torch.outer(kernel, kernel) / 16).expand(4, 1, 3, 3)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))

    def forward(self, x):
        return self.head(self.blur(self.stem(x)))


def _context(model, n=32, size=16):
    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(n, 3, size, size, generator=g), torch.randint(0, 10, (n,)))
    spec = JobSpec(analysis="fourier", model="blur", samples=n, batch_size=16, device="cpu")
    return Context(model.eval(), data, spec, torch.device("cpu"), lambda total, desc: Progress(total, desc))


def test_a_fixed_blur_block_counts_as_lowering_high_frequencies():
    ctx = _context(_Blur())
    fourier = get_analysis("fourier").fn(ctx, get_analysis("fourier").parse({}))
    changes = F.block_changes(F.high_frequency_table(fourier.frame), "high_frequency", "size")
    blur = changes[changes["name"] == "blur"].iloc[0]
    assert blur["comparable"] and blur["change"] < 0
    # the same block read as an MSA: the low-pass rule counts it as agreeing
    value, values, verdict, reason = F.low_pass_rule(fourier.frame.replace({"kind": {"conv": "msa"}}))
    assert (value, verdict) == (1.0, F.HOLDS), (values, reason)
    # read as a conv (the guessed kind), it is a conv that does not raise them
    assert F.low_pass_rule(fourier.frame)[2] == F.FAILS
    # and it lowers the feature-map variance too
    variance = get_analysis("variance").fn(ctx, {})
    _, _, verdict, _ = F.variance_rule(variance.frame.replace({"kind": {"conv": "msa"}}))
    assert verdict == F.HOLDS


def test_resizing_blocks_are_not_counted():
    frame = pd.DataFrame(dict(block=[0, 1, 2], name=["stem", "a", "b"], kind=["stem", "conv", "msa"],
                              stage=[0, 1, 2], size=[8, 8, 4], high_frequency=[0.0, 1.0, 0.5]))
    n = F.direction_counts(F.block_changes(frame, "high_frequency", "size"))
    assert n == dict(msa_down=0, msa=0, other_up=1, other=1, skipped=1)


# ----------------------------------------------------------------------------- lesion

def _lesion(rows):
    return pd.DataFrame([dict(block=i, name=n, kind=k, stage=s, accuracy_drop=d) for i, (n, k, s, d) in enumerate(rows)])


def test_identity_lesion_is_harmless_and_the_signal_carrying_first_block_hurts_most():
    frame = _lesion([("s1.0", "conv", 1, 0.60), ("s1.1", "conv", 1, 0.0), ("s1.2", "conv", 1, 0.0)])
    assert F.harmless(frame) == ["s1.1", "s1.2"]
    value, values, verdict, reason = F.lesion_rule(frame)
    assert (value, verdict) == (1.0, F.HOLDS)
    assert "harmless" in reason
    # the other way round: late hurts more
    assert F.lesion_rule(_lesion([("a", "conv", 1, 0.0), ("b", "conv", 1, 0.3)]))[2] == F.FAILS
    # a tie (two identities) is not "start hurts more"
    assert F.lesion_rule(_lesion([("a", "conv", 1, 0.0), ("b", "conv", 1, 0.0)]))[2] == F.FAILS


def test_lesion_compares_like_with_like():
    frame = _lesion([("s1.0", "conv", 1, 0.2), ("s1.1", "conv", 1, 0.1),
                     ("s2.0", "conv", 2, 0.0), ("s2.1", "conv", 2, 0.5),
                     ("s2.2", "msa", 2, 0.9)])
    value, values, verdict, reason = F.lesion_rule(frame, downsamples=["s2.0"])
    assert verdict == F.HOLDS and value == 1.0  # stage 2's pair starts with a downsampling block: not counted
    assert "downsamples" in reason and "first downsamples" in values
    # the pair is conv with conv (the stage's last block is an MSA)
    pairs = F.lesion_pairs(frame, ["s2.0"])
    assert [(p["first"], p["last"]) for p in pairs] == [("s1.0", "s1.1"), ("s2.0", "s2.1")]
    # only downsampling pairs: they are used, and the reason says so
    assert "every compared first block downsamples" in F.lesion_rule(frame[frame.stage == 2], ["s2.0"])[3]


# ----------------------------------------------------------------------------- variance, CKA, comparisons

def test_variance_peak_at_stage_end_or_before_trailing_msas():
    frame = pd.DataFrame(dict(block=range(6), name=list("abcdef"), kind=["conv", "conv", "msa", "conv", "conv", "conv"],
                              stage=[1, 1, 1, 2, 2, 2], variance=[1.0, 5.0, 2.0, 1.0, 2.0, 3.0]))
    assert F.variance_peak_rule(frame)[:3:2] == (1.0, F.HOLDS)
    frame.loc[5, "variance"] = 0.5  # stage 2 peaks in its middle
    assert F.variance_peak_rule(frame)[2] == F.UNSURE  # 1 of 2 stages
    assert F.variance_peak_rule(frame.assign(stage=1))[2] in (F.HOLDS, F.FAILS, F.UNSURE)
    assert F.variance_peak_rule(frame[frame.stage == 1])[2] == F.UNSURE  # one stage: cannot tell


def _cka(matrix, stages, kinds=None):
    n = len(stages)
    kinds = kinds or ["conv"] * n
    return pd.DataFrame([dict(i=i, j=j, kind_i=kinds[i], kind_j=kinds[j], stage_i=stages[i], stage_j=stages[j],
                              cka=float(matrix[i][j])) for i in range(n) for j in range(n)])


def test_cka_block_structure():
    n = 6
    toeplitz = [[0.9 ** abs(i - j) for j in range(n)] for i in range(n)]
    blocky = [[1.0 if i // 3 == j // 3 else 0.2 for j in range(n)] for i in range(n)]
    assert F.cka_rule(_cka(blocky, [1, 1, 1, 2, 2, 2]))[2] == F.HOLDS
    assert F.cka_rule(_cka(toeplitz, [1, 1, 1, 2, 2, 2]))[2] == F.FAILS  # decay with depth only: no blocks
    assert F.cka_rule(_cka(toeplitz, [1] * n))[2] == F.HOLDS  # a plain ViT without block structure
    assert F.cka_rule(_cka(blocky, [1] * n))[2] == F.FAILS


def test_pairs_and_comparisons():
    assert F.group_of(["stem", "conv", "head"]) == "cnn"
    assert F.group_of(["msa", "mlp"]) == "vit"
    assert F.group_of(["conv", "msa"]) == "hybrid"
    assert F.pairs_of({"r": "cnn", "v": "vit", "a": "hybrid"}) == [("v", "r"), ("a", "r")]
    assert F.pair_verdict(0.2, 0.1, msa_higher=True) == F.HOLDS
    assert F.pair_verdict(0.1, 0.1, msa_higher=True) == F.UNSURE
    assert F.pair_verdict(0.1, 0.2, msa_higher=False) == F.HOLDS
    assert F.pair_verdict(-0.001, -0.004, msa_higher=True, tie=0.005) == F.UNSURE
    assert F.combine([F.HOLDS, F.HOLDS]) == F.HOLDS and F.combine([F.HOLDS, F.FAILS]) == F.UNSURE
    noise = pd.DataFrame(dict(frequency_pi=[0.0, 0.5, 1.0], accuracy_change=[-0.5, -0.1, -0.3]))
    assert F.noise_high_frequency_change(noise) == pytest.approx(-0.2)


def test_links_rebuild_the_request_each_page_makes():
    """Each page draws the options its analysis' `Page` declares (one declaration), so a link opens the
    cached Result: a standard page is `ui.analysis_page(NAME)`, a custom one calls `ui.options(spec)`
    without a list of its own."""
    for analysis in list_analyses():
        if not analysis.page:
            continue
        source = (ROOT / analysis.page.file).read_text()
        if not analysis.page.custom:
            assert f"ui.analysis_page({analysis.name!r})" in source, analysis.name
            continue
        drawn = re.search(r"ui\.options\(spec(.{0,12})", source, re.S)
        assert bool(drawn) == bool(analysis.shown), analysis.name
        if drawn:
            assert not drawn.group(1).lstrip().startswith(("[", ",")), f"{analysis.name}: the page re-declares its list"
    base = JobSpec(analysis="findings", samples=128, device="cpu")
    specs = findings.sub_specs(base, "demo_vit", get_analysis("findings").parse({}))
    url = urlsplit(links.link(specs["hessian"]))
    assert url.path == "Hessian"
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert query["model"] == "demo_vit" and query["samples"] == "128" and query["what"] == "spectrum"
    assert int(query["minibatches"]) == specs["hessian"].params["minibatches"] == 8


# ----------------------------------------------------------------------------- the shipped demos and README

def test_readme_scoreboard_matches_the_shipped_demos():
    """Recomputed from the demos' Results (samples 128); README holds exactly this table."""
    from vitlens import engine
    result, _ = engine.run(findings.readme_spec())
    frame = result.frame
    assert set(frame["verdict"]) <= {F.HOLDS, F.FAILS, F.UNSURE}
    assert set(frame["claim"]) == set(F.CLAIMS)
    assert all(frame.loc[frame["model"] != "all", "link"].str.len() > 0)
    table = findings_table(frame)
    readme = (ROOT / "README.md").read_text()
    header = table.splitlines()[0]
    assert header in readme, "README has no findings table"
    after = readme[readme.index(header):].splitlines()
    shown = after[:next((i for i, line in enumerate(after) if not line.startswith("|")), len(after))]
    assert _same_table(shown, table.splitlines()), "README's findings table is out of date; it should read:\n" + table


_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def _same_table(shown: list, computed: list, rel: float = 0.02) -> bool:
    """Equal text, verdicts and counts; printed measurements may differ in their last digit across
    CPUs (BLAS summation order: CI printed APE 29.7 where this machine printed 29.6)."""
    if len(shown) != len(computed):
        return False
    for a, b in zip(shown, computed):
        if _NUMBER.sub("#", a) != _NUMBER.sub("#", b):
            return False
        for x, y in zip(_NUMBER.findall(a), _NUMBER.findall(b)):
            x, y = float(x), float(y)
            if abs(x - y) > rel * max(abs(x), abs(y)) + 1e-3:
                return False
    return True


def test_table_comparison_allows_last_digit_only():
    row = "| flatness | a vs b | cannot tell | APE 29.6 vs 25.9 · rise 0.787 | Fig 1b |"
    assert _same_table([row], [row.replace("29.6", "29.7")])
    assert not _same_table([row], [row.replace("29.6", "35.0")])
    assert not _same_table([row], [row.replace("cannot tell", "holds")])
    assert not _same_table([row], [row, row])


# ----------------------------------------------------------------------------- the page

def test_findings_page_renders_a_table_with_links(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest
    from vitlens.store import ResultCache
    monkeypatch.setenv("VITLENS_CHECKPOINT_ROOT", str(tmp_path))
    monkeypatch.setenv("VITLENS_DATA_ROOT", str(tmp_path))
    spec = JobSpec(analysis="findings", model="demo_resnet", samples=48, batch_size=16,
                   params=links.page_params("findings", {}))
    link = links.link(JobSpec(analysis="hessian", model="demo_vit", samples=48, batch_size=16,
                          params=links.page_params("hessian", {"what": "spectrum"})))
    frame = pd.DataFrame([F.row("non_convexity", "demo_vit vs demo_resnet", 0.1, "NEP 0.2 vs 0.1", F.HOLDS,
                                "demo_vit > demo_resnet in NEP", [link])])
    with ResultCache() as cache:
        cache.put("findings-page", Result(frame, {"analysis": "findings", "summary": F.tally(frame)}))
        cache.set_alias(request_id(spec), "findings-page")
    at = AppTest.from_file(str(ROOT / "pages" / "0_Findings.py"), default_timeout=60)
    at.query_params.update(samples="48", batch_size="16")
    start = time.perf_counter()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    shown = at.dataframe[0].value
    assert list(shown["link"]) == [link] and link.startswith("Hessian?")
    assert any("[view 1](Hessian?" in m.value for m in at.markdown)
    assert time.perf_counter() - start < 30


def test_landscape_rise_is_the_mean_over_the_ring_around_the_centre():
    g = np.linspace(-1, 1, 5)
    frame = pd.DataFrame([dict(x=x, y=y, loss=1.0 + x * x + y * y, finite=True) for x in g for y in g])
    assert F.landscape_rise(frame) == pytest.approx(np.mean([0.25] * 4 + [0.5] * 4))
    assert F.landscape_rise(frame.assign(loss=frame["loss"] * 2)) > F.landscape_rise(frame)  # sharper


def _evidence(kinds, stages, nep, ape, top, curvature, noise_drop):
    """Constructed sub-Results of one model (what `gather` returns)."""
    n = len(kinds)
    base = JobSpec(analysis="findings", samples=64, device="cpu")
    specs = findings.sub_specs(base, "m", get_analysis("findings").parse({}))
    table = pd.DataFrame(dict(block=range(n), name=[f"b{i}" for i in range(n)], kind=kinds, stage=stages))
    hf = np.cumsum([0.1 if k != "msa" else -0.1 for k in kinds])
    fourier = pd.concat([table.assign(size=8, frequency=0.0, relative_log_amplitude=0.0),
                         table.assign(size=8, frequency=np.pi, relative_log_amplitude=hf)])
    variance = table.assign(height=8, width=8, variance=np.exp(hf))
    lesion = table[table.kind != "stem"].assign(accuracy_drop=np.linspace(0.3, 0.0, n - 1))
    cka = _cka([[1.0 if stages[i] == stages[j] else 0.2 for j in range(n)] for i in range(n)], stages, kinds)
    g = np.linspace(-1, 1, 5)
    land = pd.DataFrame([dict(x=x, y=y, loss=curvature * (x * x + y * y), finite=True) for x in g for y in g])
    noise = pd.DataFrame(dict(frequency_pi=[0.0, 0.5, 1.0], accuracy_change=[0.0, -noise_drop, -noise_drop]))
    spectrum = pd.DataFrame(dict(eigenvalue=[top, -0.1]))
    frames = dict(hessian=(spectrum, dict(nep=nep, ape=ape)), landscape=(land, {}), fourier=(fourier, {}),
                  variance=(variance, {}), lesion=(lesion, {}), cka=(cka, {}), noise=(noise, {}))
    return {a: (specs[a], Result(f, {"summary": s})) for a, (f, s) in frames.items()}


def test_scoreboard_from_constructed_results():
    resnet = _evidence(["stem", "conv", "conv", "conv", "conv"], [0, 1, 1, 2, 2], nep=0.0, ape=5.0, top=9.0,
                       curvature=2.0, noise_drop=0.3)
    vit = _evidence(["stem", "msa", "mlp", "msa", "mlp"], [0, 1, 1, 1, 1], nep=0.2, ape=1.0, top=2.0,
                    curvature=0.5, noise_drop=0.05)
    vit["fourier"] = (vit["fourier"][0], "fourier failed on purpose")
    frame = F.scoreboard(JobSpec(analysis="findings", samples=64), {"r": resnet, "v": vit})
    assert list(frame.columns) == F.COLUMNS and set(frame["claim"]) == set(F.CLAIMS)
    verdict = {(r["claim"], r["model"]): r["verdict"] for r in frame.to_dict("records")}
    for claim in ("non_convexity", "flatness", "noise_robustness"):
        assert verdict[(claim, "v vs r")] == F.HOLDS, frame[frame.claim == claim].to_dict("records")
    assert verdict[("low_pass", "r")] == F.HOLDS and verdict[("low_pass", "v")] == F.UNSURE  # its input failed
    assert verdict[("variance", "v")] == F.HOLDS and verdict[("lesion", "r")] == F.HOLDS
    assert verdict[("cka_structure", "r")] == F.HOLDS and verdict[("variance_peak", "v")] == F.UNSURE
    assert all(frame["link"].str.len() > 0)
    assert "fourier failed on purpose" in frame.loc[(frame.claim == "low_pass") & (frame.model == "v"), "reason"].iloc[0]
    assert "| non_convexity | v vs r | holds |" in findings_table(frame)


# ----------------------------------------------------------------------------- a new claim is one declaration

TOY_CLAIM = "toy_positive_variance"


def _positive_variance(variance, model, evidence):
    """The toy claim's rule: the feature-map variance is positive in every block."""
    frame = variance.frame
    bad = list(frame.loc[frame["variance"] <= 0, "name"])
    return ((len(frame) - len(bad)) / len(frame), f"{len(frame) - len(bad)}/{len(frame)} blocks positive",
            F.FAILS if bad else F.HOLDS, f"not positive at {', '.join(bad)}" if bad else "positive in every block")


@pytest.fixture
def toy_claim():
    claim = F.register_claim(F.Claim(TOY_CLAIM, "Positive variance", "feature-map variance is positive everywhere",
                                     "none (a test claim)", needs=("variance",), rule=F.per_model(_positive_variance)))
    yield claim
    F.CLAIMS.pop(TOY_CLAIM)


def test_a_new_claim_is_one_declaration(toy_claim):
    """Registered once, the toy claim is in the scoreboard (its verdicts from hand-made Results, after the
    paper's claims), the findings analysis (its needs requested, its rows in the Result) and the report."""
    resnet = _evidence(["stem", "conv", "conv", "conv", "conv"], [0, 1, 1, 2, 2], nep=0.0, ape=5.0, top=9.0,
                       curvature=2.0, noise_drop=0.3)
    vit = _evidence(["stem", "msa", "mlp", "msa", "mlp"], [0, 1, 1, 1, 1], nep=0.2, ape=1.0, top=2.0,
                    curvature=0.5, noise_drop=0.05)
    vit["variance"] = (vit["variance"][0], Result(vit["variance"][1].frame.assign(
        variance=lambda f: f["variance"].where(f["name"] != "b2", 0.0)), {}))
    frame = F.scoreboard(JobSpec(analysis="findings", samples=64), {"r": resnet, "v": vit})
    toy = frame[frame["claim"] == TOY_CLAIM]
    assert list(toy.index) == [len(frame) - 2, len(frame) - 1]  # after the paper's claims
    assert list(toy["model"]) == ["r", "v"] and list(toy["verdict"]) == [F.HOLDS, F.FAILS]
    assert list(toy["value"]) == [1.0, 0.8] and toy["reason"].iloc[1] == "not positive at b2"
    assert set(toy["figure"]) == {"none (a test claim)"} and toy["link"].iloc[0] == links.link(resnet["variance"][0])

    # the findings analysis: the sub-analyses come from the claims' needs, its Result holds the rows
    served = {"demo_resnet": resnet, "demo_vit": vit}
    ctx = Context(None, None, JobSpec(analysis="findings", model="demo_resnet", samples=64, device="cpu"),
                  torch.device("cpu"), lambda total, desc: Progress(total, desc),
                  runner=lambda spec: served[spec.model][spec.analysis][1])
    result = get_analysis("findings").fn(ctx, get_analysis("findings").parse({"models": "demo_resnet,demo_vit"}))
    rows = result.frame[result.frame["claim"] == TOY_CLAIM]
    assert list(rows["model"]) == ["demo_resnet", "demo_vit"] and list(rows["verdict"]) == [F.HOLDS, F.FAILS]
    F.register_claim(replace(toy_claim, needs=("variance", "evaluate")))  # a need no other claim has
    specs = findings.sub_specs(JobSpec(analysis="findings", samples=64), "demo_vit", get_analysis("findings").parse({}))
    assert list(specs)[-1] == "evaluate" and specs["evaluate"].params == links.page_params("evaluate", {})

    # the report: a section under its readable name, with its declared evidence
    from vitlens.report import Report, render
    page = render(Report(result))
    assert "<h3 id='claim-toy_positive_variance'>Positive variance: feature-map variance is positive everywhere" in page


def test_each_claim_needs_known_analyses_and_the_requests_stay():
    """The declared needs are registered analyses (the evidence among them), and together they are the
    seven sub-requests findings has always made (their request ids, cache keys and shipped Results)."""
    for claim in F.CLAIMS.values():
        assert claim.evidence in claim.needs and all(get_analysis(a) for a in claim.needs), claim.id
    assert findings.needed() == ["hessian", "landscape", "fourier", "variance", "lesion", "cka", "noise"]
    assert set(findings.SUB_OPTIONS) <= set(findings.needed())  # no option passed to an analysis no claim needs
    specs = findings.sub_specs(JobSpec(analysis="findings", samples=64), "m", get_analysis("findings").parse({}))
    assert {k: s.params for k, s in specs.items() if k in ("hessian", "landscape", "noise")} == dict(
        hessian=links.page_params("hessian", dict(what="spectrum", top_k=5, minibatches=8, minibatch=16)),
        landscape=links.page_params("landscape", dict(grid=11, range=1.0)),
        noise=links.page_params("noise", dict(frequencies=11, eps=0.1)))
    assert [c.name for c in F.CLAIMS.values()][:2] == ["Non-convexity", "Flatness"]
