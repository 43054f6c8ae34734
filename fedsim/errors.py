"""The project's own errors: bad input that fedsim names in one line (the CLI prints it and exits 2).

Every error a user can cause with a config, a data file, a model path or a cluster that is too
small derives from FedsimError; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class FedsimError(Exception):
    """Bad input to fedsim: the message names the problem (a key path, a file and line, a model)."""


class ResourceError(FedsimError, RuntimeError):
    """The cluster cannot hold the requested worker pool."""


class PrivacyBudgetError(FedsimError, ValueError):
    """The configured privacy mechanism cannot make a single release within its budget."""
