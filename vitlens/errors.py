"""Errors that vitlens reports to users.

`VitlensError` marks bad input (unknown model, bad checkpoint, missing data folder, ...):
the CLI prints its message on one line and exits 2, the dashboard shows it and keeps running.
Anything else that escapes is an internal failure (CLI exit 1).
"""


class VitlensError(Exception):
    """Bad input from the user; the message is one line that says what to do."""
