"""Supply domain: kit states, ledger, shipments, expiry, kit choice, resupply (pure, no I/O)."""
