"""ofsre.platform: the reference Open Finance platform (services, queue, local runtime)."""
