"""Settings of the cleaning pipeline (the ``data.clean`` section of a koneox config)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class CleanConfig:
    """Every cleaning step can be switched off or tuned here."""

    text_field: str = "text"
    """Name of the field that holds the document text in the input records."""
