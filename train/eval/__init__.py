"""Checkpoint evaluation: held-out loss, degeneration metrics, selection (``koneox select``)."""
