"""Data quality of the engagement lake: GX suites per hour partition, quarantine, training gate.

validate_day()               validates a day's hours; raises ValidationFailed (and quarantines) on failure
require_validated_window()   what training calls: refuses quarantined, failed or unvalidated hours
"""

from __future__ import annotations

from feedloop.quality.runner import DayResult, ValidationFailed, validate_day
from feedloop.quality.status import Acceptance, WindowNotReady, require_validated_window

__all__ = ["Acceptance", "DayResult", "ValidationFailed", "WindowNotReady", "require_validated_window", "validate_day"]
