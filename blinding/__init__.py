"""Blinding domain: schedules, kit numbering, sealing, unblinding policy (pure, no I/O)."""
