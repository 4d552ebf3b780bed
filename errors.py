"""The one error type the CLI turns into a single stderr line and exit status 2."""


class UsageError(ValueError):
    """Bad input from the user: a flag value, a missing file, an unreachable dataset."""
