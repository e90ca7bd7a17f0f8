"""Errors that cross stage boundaries: raised in one stage, read by the alerts, the CLI and the task bodies.

Why here: an alert or a CLI exit code that must recognise a blocked promotion should not import the
promotion package (and, through it, training) to do so.
"""

from __future__ import annotations


class PromotionBlocked(RuntimeError):
    """The gate refused the candidate (or its ONNX export failed parity); the message says why.

    check (gate | parity | canary), the version, its champion and the S3 URIs of its gate decision and
    report travel with it, so the alert can list the failed checks and link the report.
    """

    def __init__(self, message: str, *, check: str = "gate", version: str = "", champion: str | None = None,
                 gate_uri: str | None = None, report_uri: str | None = None):  # defaults: unpickling calls cls(message)
        super().__init__(message)
        self.check, self.version, self.champion = check, version, champion
        self.gate_uri, self.report_uri = gate_uri, report_uri


class NotApproved(RuntimeError):
    """The flip needed a human's Approve and the recorded answer is Reject or no answer: nothing changes.

    Not a PromotionBlocked: the human's own decision is no incident to alert on; the task is skipped, as
    when the approve step itself skips the flip.
    """


class EvaluationError(RuntimeError):
    """The inputs of an evaluation are missing or do not fit the model."""
