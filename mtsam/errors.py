"""User-facing error types.

CLIs catch ``MTSAMError`` and print ``error: <message>`` as a single line, exit status 2.
The concrete classes also derive from ``ValueError`` so generic callers can catch them too.
"""


class MTSAMError(Exception):
    """Base class of every error meant to be shown to a user (not a bug)."""


class DataError(MTSAMError, ValueError):
    """A dataset on disk is missing, incomplete or malformed."""


class ConfigError(MTSAMError, ValueError):
    """A configuration value, task name or baseline is invalid."""


class CheckpointError(MTSAMError, ValueError):
    """A checkpoint cannot be read or does not match the model."""


class NonFiniteError(MTSAMError, ValueError):
    """A model output fed to a metric holds NaN/inf: the evaluation is invalid and must not count."""
