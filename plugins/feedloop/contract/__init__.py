"""The data contracts between producers and the lake: the engagement event."""
