"""Write the dashboard's standard page files from the analyses' declarations.

    python scripts/update_pages.py          # write missing or stale standard pages
    python scripts/update_pages.py --check  # exit 1 if a page file is missing or stale

Streamlit finds pages by their files in pages/ (the way deep links with query parameters work on a
freshly started server, see README), so every analysis with a `Page` has a file
`pages/<order>_<slug>.py`. A standard page (options, then figures) is two generated lines; a custom
one (`Page(custom=True)`) is written by hand and only checked to exist.
"""
import sys
from pathlib import Path

from vitlens.analyses import pages

ROOT = Path(__file__).resolve().parents[1]


def stub(name: str) -> str:
    return (f'"""Generated from the declaration of `{name}` by scripts/update_pages.py: options, then figures."""\n'
            f"from vitlens import ui\n\nui.analysis_page({name!r})\n")


def main(check: bool) -> int:
    stale = []
    for analysis in pages():
        path = ROOT / analysis.page.file
        if analysis.page.custom:
            if not path.is_file():
                stale.append(f"{path.relative_to(ROOT)} (custom page of {analysis.name}) is missing")
            continue
        if not path.is_file() or path.read_text() != stub(analysis.name):
            stale.append(f"{path.relative_to(ROOT)} is missing or stale")
            if not check:
                path.write_text(stub(analysis.name))
    for line in stale:
        print(line, file=sys.stderr)
    return 1 if stale and check else 0


if __name__ == "__main__":
    sys.exit(main("--check" in sys.argv))
