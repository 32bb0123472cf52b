"""ofsre.dashboards."""
