"""Supply domain: kit states, shipments, expiry, resupply, forecasting (pure, no I/O)."""
