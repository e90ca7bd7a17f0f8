"""Data quality of the engagement lake: GX suites per hour partition, quarantine, training window.

validate_day()       validates a day's hours; quarantines hours with a blocking failure (raises ValidationFailed)
training_window()    what training calls: the window's clean hours by dataset.on_quarantined, late hours re-validated
"""

from __future__ import annotations

from feedloop.quality.record import DayResult
from feedloop.quality.runner import ValidationFailed, validate_day
from feedloop.quality.status import Acceptance
from feedloop.quality.window import TrainingWindow, WindowNotReady, training_window

__all__ = ["Acceptance", "DayResult", "TrainingWindow", "ValidationFailed", "WindowNotReady", "training_window",
           "validate_day"]
