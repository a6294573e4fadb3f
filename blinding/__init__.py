"""Blinding domain: schedules, kit numbering, sealing, padding (pure, no I/O; see README.md)."""
