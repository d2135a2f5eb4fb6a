"""Morpheme-aware byte-level BPE tokenizer (30,003 entries, Polyglot-Ko layout).

MeCab is used only while learning merges; the saved Hugging Face tokenizer encodes without it.
"""

from tokenizer.train import PII_TOKENS, SPECIAL_TOKENS, train_tokenizer

__all__ = ["PII_TOKENS", "SPECIAL_TOKENS", "train_tokenizer"]
