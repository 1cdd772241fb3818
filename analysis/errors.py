"""The one error type analysis shows to a user (the report CLI prints it as ``error: <message>``)."""

from mtsam.errors import MTSAMError  # cheap: mtsam's top level loads nothing heavy


class AnalysisError(MTSAMError, ValueError):
    """A sweep cannot be loaded or analysed as asked (unknown experiment, empty sweep, bad input)."""
