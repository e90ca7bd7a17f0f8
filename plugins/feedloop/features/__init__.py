"""Feature definitions (shared by training and serving), the point-in-time training set, position bias, snapshots."""
