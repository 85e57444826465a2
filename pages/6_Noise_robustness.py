"""Generated from the declaration of `noise` by scripts/update_pages.py: options, then figures."""
from vitlens import ui

ui.analysis_page('noise')
