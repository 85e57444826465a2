"""The paper's findings as rules: pure claim rules (`rules`) and the scoreboard frame they make
(`scoreboard`). `vitlens.analyses.findings` is the request that gathers the evidence."""
from .rules import *  # noqa: F401,F403 - the rules are this package's API
from .rules import _fmt  # noqa: F401
from .scoreboard import _failed, _ok, scoreboard  # noqa: F401
