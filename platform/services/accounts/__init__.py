"""accounts v2: accounts, balances, transactions of a consent's customer (``create_app`` in :mod:`.app`)."""
