"""ofsre.alerts."""
