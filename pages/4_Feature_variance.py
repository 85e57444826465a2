"""Generated from the declaration of `variance` by scripts/update_pages.py: options, then figures."""
from vitlens import ui

ui.analysis_page('variance')
