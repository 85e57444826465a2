"""Load on a real server: one session floods heavy landscape jobs while eight teammates open quick
views by deep link (tests/load_scenario.py: Streamlit on 127.0.0.1, its embedded workers, Chromium
through Playwright). Every quick view draws its chart, no error is shown to them, no job is lost,
and the flood is held to the per-session limit. The figures print (-s) and are in README."""
import json

import pytest

from load_scenario import CHEAP_LINKS, browser_missing, run_scenario

if (why := browser_missing()) is not None:
    pytest.skip(why, allow_module_level=True)


def test_quick_views_are_not_starved_by_a_flood_and_nothing_is_lost(tmp_path):
    figures = run_scenario(tmp_path, heavy=6, timeout_s=300)
    print("load:", json.dumps({k: v for k, v in figures.items() if k not in ("error_texts", "sessions")}))
    assert figures["charts"] == len(CHEAP_LINKS), figures["missing"]
    assert figures["errors_shown"] == 0, figures["error_texts"]
    assert figures["jobs_lost"] == 0
    assert figures["flood_unfinished"] >= 2, figures  # the quick views did not wait for the flood
    assert figures["heavy_accepted"] == 4, figures  # VITLENS_MAX_JOBS_PER_SESSION
    assert figures["heavy_refused"] == 2 and all("VITLENS_MAX_JOBS_PER_SESSION" in r for r in figures["refusals"])
