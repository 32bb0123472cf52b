"""The embedded API gateway: mTLS, TPM/TPS limits and round-robin routing (``create_app`` in :mod:`.app`)."""
