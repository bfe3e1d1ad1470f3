"""umup-repro: a replication pipeline for u-muP (Blake et al., 2024)."""

__version__ = "0.1.0"
