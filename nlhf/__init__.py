"""nlhf: a reproducible replication of Nash Learning from Human Feedback (Munos et al., ICML 2024)."""

__version__ = "0.1.0"
