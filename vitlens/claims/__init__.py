"""The paper's findings as declared claims: each `Claim` (`declarations`) is registered once beside its
pure rule (`rules`: per model; `comparisons`: MSA models against CNNs), and `scoreboard` applies them
all. `vitlens.analyses.findings` is the request that gathers the evidence."""
from .declarations import *  # noqa: F401,F403 - the declarations, rows and verdicts are this package's API
from .rules import *  # noqa: F401,F403 - the rules too (importing them registers their claims)
from .comparisons import *  # noqa: F401,F403
from .scoreboard import scoreboard  # noqa: F401
