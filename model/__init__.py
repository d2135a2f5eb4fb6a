"""GPT-NeoX decoder (Polyglot-Ko architecture) as a plain PyTorch module.

    from model import ModelConfig, GPTNeoX
    cfg = ModelConfig.from_name("1.3b")
    m = GPTNeoX(cfg)                 # m(input_ids) -> logits (B, T, padded_vocab)
    m.save_pretrained(path); GPTNeoX.from_pretrained(path)
"""

from model.config import NAMED_SIZES, ModelConfig, ModelConfigError
from model.gpt_neox import GPTNeoX

__all__ = ["NAMED_SIZES", "GPTNeoX", "ModelConfig", "ModelConfigError"]
