"""payments v4: payment consents and Pix payments (``create_app`` in :mod:`.app`)."""
