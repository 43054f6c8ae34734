"""Errors raised by secure aggregation."""
from fedsim.errors import FedsimError


class SecAggConfigError(FedsimError, ValueError):
    """A SecAggConfig field (or a config/cohort combination) is invalid."""


class TensorSpecError(ValueError):
    """An update's tensor names, shapes or values do not match the declared spec."""


class SecAggProtocolError(ValueError):
    """A message arrived out of order, from an unknown party, twice, or malformed."""


class SecAggAbort(RuntimeError):
    """The aggregation cannot complete (too few survivors to unmask); keep the previous state."""
