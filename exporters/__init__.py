"""ofsre.exporters."""
