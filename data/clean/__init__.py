"""Corpus cleaning: raw Korean text in, clean documents plus an accounting report out."""
