"""The settlement worker: consumes "pix-payments" and settles each payment (``create_app`` in :mod:`.app`)."""
