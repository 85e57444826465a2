"""Rewrite README.md's option tables from the analyses' declarations (`vitlens.options`).

    python scripts/update_readme_options.py          # rewrite in place
    python scripts/update_readme_options.py --check  # exit 1 if README is out of date
"""
import sys
from pathlib import Path

from vitlens.readme import README_OPTIONS_END, README_OPTIONS_START, options_section

readme = Path(__file__).resolve().parents[1] / "README.md"
text = readme.read_text()
start, end = text.index(README_OPTIONS_START), text.index(README_OPTIONS_END) + len(README_OPTIONS_END)
updated = text[:start] + options_section() + text[end:]
if "--check" in sys.argv:
    sys.exit(0 if updated == text else 1)
readme.write_text(updated)
