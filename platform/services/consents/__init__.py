"""consents v3: create, read and revoke data-sharing consents (``create_app`` in :mod:`.app`)."""
