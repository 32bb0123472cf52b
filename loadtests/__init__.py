"""ofsre.loadtests."""
