"""A tiny Korean GPT-NeoX in the Hugging Face layout koneox exports, for evaluation tests.

    from harness import make_tiny_model
    model_dir = make_tiny_model("/tmp/tiny")   # config.json, model.safetensors, tokenizer files

Byte-level BPE (2,000 tokens) trained on Naver movie reviews, 2 layers of width 64, the vocabulary
padded to a multiple of 128 like every koneox export (so the output head has rows no token ever
gets), then a few dozen AdamW steps on the same reviews: with random weights many choices of a
KoBEST item get nearly the same log-likelihood, after training they differ. About 15 s on one core.

    python tests/harness/tiny_model.py OUT_DIR
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NSMC = "raw/nsmc_reviews.jsonl.gz"


def make_tiny_model(
    out_dir: str | os.PathLike,
    texts: int = 4000,
    vocab_size: int = 2000,
    steps: int = 60,
    seq_len: int = 128,
    batch_size: int = 16,
    max_positions: int = 4096,
    seed: int = 0,
) -> Path:
    """Train and save the tiny model to ``out_dir``; returns ``out_dir``.

    ``max_positions`` is the context length written to config.json (what lm-eval truncates to):
    rotary positions cost no weights, and 5-shot BoolQ prompts reach about 3,000 tokens."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from data.testing import EOS, corpus_dir, read_texts, train_tiny_tokenizer
    from model import ModelConfig

    out = Path(out_dir)
    reviews = read_texts(corpus_dir() / NSMC, limit=texts)
    train_tiny_tokenizer(reviews, out, vocab_size=vocab_size)
    tok = PreTrainedTokenizerFast.from_pretrained(str(out))
    cfg = ModelConfig.from_name(
        "tiny", vocab_size=len(tok), hidden_size=64, num_layers=2, num_heads=4, intermediate_size=256,
        max_position_embeddings=max_positions, bos_token_id=tok.convert_tokens_to_ids(EOS),
        eos_token_id=tok.convert_tokens_to_ids(EOS),
    )
    torch.manual_seed(seed)
    model = GPTNeoXForCausalLM(GPTNeoXConfig.from_dict(cfg.to_hf_dict()))

    # Reviews joined by EOS, cut into (rows, seq_len) training sequences.
    ids = [i for text in reviews for i in [*tok.encode(text), cfg.eos_token_id]]
    rows = len(ids) // seq_len
    data = torch.tensor(ids[: rows * seq_len]).view(rows, seq_len)  # (rows, T)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        batch = data[torch.randint(rows, (batch_size,), generator=gen)]  # (B, T)
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    model.save_pretrained(str(out))
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} OUT_DIR")
    print(make_tiny_model(sys.argv[1]))
