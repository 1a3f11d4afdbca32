"""The points ledger: double-entry accounts, lots with expiry, holds and earning rules."""
