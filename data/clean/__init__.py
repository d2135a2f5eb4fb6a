"""Corpus cleaning: raw Korean text in, clean documents plus an accounting report out.

Python API: ``clean_files(inputs, out_dir, config, num_proc=, steps=, keep_rejects=, strict=)``
returns the report dict. Each step is also a plain function: ``fix_unicode``,
``html_to_text``, ``strip_markup``, ``normalize_whitespace``, ``shorten_repeats``,
``quality_reason``, ``escape_special_tokens``, ``mask_pii``, ``exact_key``, ``minhash_signatures``.
Shell: ``koneox clean INPUT... --out DIR [--config FILE] [--num-proc N] [--steps a,b]``.

Output format (read by the tokenizer trainer and the packer), in ``DIR``:

- ``part-00000.jsonl.gz``, ``part-00001.jsonl.gz``, ...: gzip JSON Lines, UTF-8, one
  document per line, ``shard_docs`` (default 100,000) lines per shard, shards in input
  order. Each shard is several gzip members of about 1 MB of lines (gzip level
  ``compress_level``, default 1), which every gzip reader reads as one stream. Each line is an object whose first key is ``"text"`` (the cleaned document;
  paragraphs separated by ``"\\n"``, at most one empty line in a row; literal special-token
  strings of the input escaped, ``<|endoftext|>`` -> ``< |endoftext|>``; PII replaced by
  ``<|rrn|>``, ``<|tel|>``, ``<|acc|>`` and ``email@example.com``), followed by every other
  field of the input record unchanged (e.g. ``source``, ``movie_id``). Documents made by the
  join step carry the first member's fields plus ``"joined_docs": n``.
- ``report.json`` / ``report.md``: counts in, kept, dropped by reason, rejected input with
  file and line, PII counts, special-token strings escaped (by string), throughput.
  ``documents_in == kept + dropped_total + rejected_input`` always holds.
- ``rejects-00000.jsonl.gz`` (only with ``keep_rejects``): dropped documents with
  ``reason``, ``file``, ``line`` and their text at the point they were dropped, then their
  input fields; at most ``shard_docs`` per file, and a file also ends where a part shard ends.
- ``_COMPLETE.json`` (``data/stage.py``), written last: the directory is finished; it lists
  the shards. Until then ``_progress-NNNNN.json`` files record, per complete shard, how far
  into the input it reaches, and a killed run (SIGKILL, or SIGTERM: ``CleanInterrupted``)
  rerun with the same inputs, config and options resumes after the last complete shard.

The shards are byte-identical for the same inputs and config whatever ``num_proc`` is, and
whether the run was interrupted and resumed or not.
"""

from data.clean.config import STEP_NAMES, CleanConfig, load_clean_config
from data.clean.dedup import exact_key, minhash_signatures
from data.clean.filters import quality_reason
from data.clean.pii import mask_pii
from data.clean.pipeline import CleanInterrupted, StrictInputError, clean_files
from data.clean.specials import escape_special_tokens
from data.clean.text import fix_unicode, html_to_text, normalize_whitespace, shorten_repeats, strip_markup

__all__ = [
    "STEP_NAMES",
    "CleanConfig",
    "CleanInterrupted",
    "StrictInputError",
    "clean_files",
    "escape_special_tokens",
    "exact_key",
    "fix_unicode",
    "html_to_text",
    "load_clean_config",
    "mask_pii",
    "minhash_signatures",
    "normalize_whitespace",
    "quality_reason",
    "shorten_repeats",
    "strip_markup",
]
