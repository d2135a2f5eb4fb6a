"""Model shape and initialisation settings, with the registry of named sizes.

The four Polyglot-Ko sizes are reproduced exactly (REFERENCE §1); ``tiny`` is a CPU model for
tests and the demo run. A named size is a starting point: any field can be overridden after it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace


class ModelConfigError(ValueError):
    """An impossible model shape. ``key`` names the offending field."""

    def __init__(self, key: str, message: str):
        super().__init__(f"model.{key}: {message}")
        self.key = f"model.{key}"


@dataclass
class ModelConfig:
    """Shape of a GPT-NeoX decoder (parallel residual, partial rotary, untied embeddings)."""

    name: str = "tiny"
    """Named size this config started from ('tiny', '1.3b', '3.8b', '5.8b', '12.8b')."""
    vocab_size: int = 30003
    """Tokenizer vocabulary size; the embedding is padded up to ``pad_vocab_multiple``."""
    pad_vocab_multiple: int = 128
    """Pad the embedding rows to a multiple of this (30,003 -> 30,080), for GEMM efficiency."""
    hidden_size: int = 128
    """Width of the residual stream."""
    num_layers: int = 4
    """Number of transformer layers."""
    num_heads: int = 4
    """Attention heads; head_dim = hidden_size / num_heads."""
    intermediate_size: int = 512
    """Width of the MLP's hidden layer (4 x hidden_size in every Polyglot-Ko size)."""
    rotary_pct: float = 0.5
    """Share of each head's dimensions that get rotary position embeddings."""
    rotary_base: float = 10000.0
    """Rotary embedding base (theta)."""
    max_position_embeddings: int = 2048
    """Longest context the model is trained for (written to config.json)."""
    layer_norm_eps: float = 1e-5
    """LayerNorm epsilon."""
    use_parallel_residual: bool = True
    """x + attn(ln1(x)) + mlp(ln2(x)) instead of two sequential residual blocks."""
    init_std: float = 0.0
    """Std of the 'small init' normal (0 = GPT-NeoX default sqrt(2 / (5 * hidden_size)))."""
    init_seed: int = 1234
    """Seed of the weight initialisation (independent of the global torch RNG)."""
    activation_checkpointing: bool = False
    """Recompute each layer's activations in the backward pass to save memory."""
    bos_token_id: int = 0
    """Written to config.json for generation (Polyglot-Ko layout)."""
    eos_token_id: int = 2
    """End of document / EOS id (``<|endoftext|>`` in the Polyglot-Ko layout)."""
    init_from: str = ""
    """Hugging Face GPT-NeoX directory to start from (continued pretraining); '' = random init."""

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def rotary_dims(self) -> int:
        # Same rounding as GPT-NeoX and transformers: int(head_dim * rotary_pct).
        return int(self.head_dim * self.rotary_pct)

    @property
    def padded_vocab_size(self) -> int:
        m = self.pad_vocab_multiple
        return math.ceil(self.vocab_size / m) * m

    @property
    def small_init_std(self) -> float:
        return self.init_std or math.sqrt(2.0 / (5.0 * self.hidden_size))

    @classmethod
    def from_name(cls, name: str, **overrides: object) -> ModelConfig:
        if name not in NAMED_SIZES:
            raise ModelConfigError("name", f"unknown size {name!r}; choose from {', '.join(NAMED_SIZES)}")
        cfg = replace(NAMED_SIZES[name], **overrides)
        cfg.check()
        return cfg

    def check(self) -> None:
        """Raise ``ModelConfigError`` naming the field if the shape is impossible."""
        for key in ("vocab_size", "pad_vocab_multiple", "hidden_size", "num_layers", "num_heads",
                    "intermediate_size", "max_position_embeddings"):
            if getattr(self, key) <= 0:
                raise ModelConfigError(key, f"must be positive, got {getattr(self, key)}")
        if self.hidden_size % self.num_heads:
            raise ModelConfigError(
                "num_heads", f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}"
            )
        if not 0.0 < self.rotary_pct <= 1.0:
            raise ModelConfigError("rotary_pct", f"must be in (0, 1], got {self.rotary_pct}")
        if self.rotary_dims % 2:
            raise ModelConfigError(
                "rotary_pct",
                f"rotary dims int({self.head_dim} * {self.rotary_pct}) = {self.rotary_dims} is odd; "
                "rotary embeddings rotate pairs of dimensions",
            )
        if self.rotary_dims > self.head_dim:
            raise ModelConfigError("rotary_pct", f"rotary dims {self.rotary_dims} exceed head_dim {self.head_dim}")
        if self.rotary_dims == 0:
            raise ModelConfigError("rotary_pct", f"rotary dims round down to 0 for head_dim {self.head_dim}")
        if self.layer_norm_eps <= 0:
            raise ModelConfigError("layer_norm_eps", f"must be positive, got {self.layer_norm_eps}")

    def num_parameters(self) -> int:
        """Closed-form count: L*(4h^2 + 2hi + 9h + i) + 2Vh + 2h (REFERENCE §1)."""
        h, i, L, V = self.hidden_size, self.intermediate_size, self.num_layers, self.padded_vocab_size
        return L * (4 * h * h + 2 * h * i + 9 * h + i) + 2 * V * h + 2 * h

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (forward + backward): 6 per parameter for the matmuls,
        plus the attention scores and weighted sum, 12 * layers * seq_len * hidden
        (the PaLM / Megatron accounting, without activation recomputation). The input
        embedding is a lookup, not a matmul, so its V*h parameters are left out (counting them
        overstated MFU by about 4% at 1.3B); the output head is a real matmul and stays in."""
        matmul_params = self.num_parameters() - self.padded_vocab_size * self.hidden_size
        return 6.0 * matmul_params + 12.0 * self.num_layers * seq_len * self.hidden_size

    def to_dict(self) -> dict:
        return asdict(self)

    # -- Hugging Face config.json ---------------------------------------------------------------

    def to_hf_dict(self) -> dict:
        """A ``config.json`` that transformers 4.x and 5.x both read as GPTNeoXForCausalLM."""
        return {
            "architectures": ["GPTNeoXForCausalLM"],
            "model_type": "gpt_neox",
            "vocab_size": self.padded_vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "intermediate_size": self.intermediate_size,
            "hidden_act": "gelu",
            "rotary_pct": self.rotary_pct,
            "rotary_emb_base": self.rotary_base,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": self.rotary_base,
                "partial_rotary_factor": self.rotary_pct,
            },
            "max_position_embeddings": self.max_position_embeddings,
            "layer_norm_eps": self.layer_norm_eps,
            "use_parallel_residual": self.use_parallel_residual,
            "tie_word_embeddings": False,
            "attention_bias": True,
            "attention_dropout": 0.0,
            "hidden_dropout": 0.0,
            "initializer_range": 0.02,
            "use_cache": True,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "torch_dtype": "float32",
        }

    @classmethod
    def from_hf_dict(cls, hf: dict, source: str = "config.json") -> ModelConfig:
        """Read a GPT-NeoX ``config.json`` (old ``rotary_pct`` keys or new ``rope_parameters``)."""
        if hf.get("model_type") != "gpt_neox":
            raise ModelConfigError("name", f"{source}: model_type is {hf.get('model_type')!r}, expected 'gpt_neox'")
        rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
        if hf.get("hidden_act", "gelu") != "gelu":
            raise ModelConfigError("name", f"{source}: hidden_act {hf['hidden_act']!r} is not supported (gelu only)")
        if hf.get("tie_word_embeddings", False):
            raise ModelConfigError("name", f"{source}: tied embeddings are not supported")
        cfg = cls(
            name=str(hf.get("_name_or_path") or "hf"),
            vocab_size=int(hf["vocab_size"]),
            hidden_size=int(hf["hidden_size"]),
            num_layers=int(hf["num_hidden_layers"]),
            num_heads=int(hf["num_attention_heads"]),
            intermediate_size=int(hf["intermediate_size"]),
            rotary_pct=float(hf.get("rotary_pct", rope.get("partial_rotary_factor", 0.25))),
            rotary_base=float(hf.get("rotary_emb_base", rope.get("rope_theta", 10000.0))),
            max_position_embeddings=int(hf.get("max_position_embeddings", 2048)),
            layer_norm_eps=float(hf.get("layer_norm_eps", 1e-5)),
            use_parallel_residual=bool(hf.get("use_parallel_residual", True)),
            bos_token_id=int(hf.get("bos_token_id") or 0),
            eos_token_id=int(hf.get("eos_token_id") if hf.get("eos_token_id") is not None else 2),
        )
        cfg.check()
        return cfg


def _polyglot(name: str, h: int, layers: int, heads: int, rotary_pct: float) -> ModelConfig:
    return ModelConfig(name=name, hidden_size=h, num_layers=layers, num_heads=heads,
                       intermediate_size=4 * h, rotary_pct=rotary_pct)


NAMED_SIZES: dict[str, ModelConfig] = {
    # A CPU model for tests and the demo: same architecture, real vocabulary.
    "tiny": ModelConfig(name="tiny", hidden_size=128, num_layers=4, num_heads=4, intermediate_size=512,
                        rotary_pct=0.5, max_position_embeddings=512),
    # Polyglot-Ko (REFERENCE §1): hidden, layers, heads, rotary_pct.
    "1.3b": _polyglot("1.3b", 2048, 24, 16, 0.5),
    "3.8b": _polyglot("3.8b", 3072, 32, 24, 0.5),
    "5.8b": _polyglot("5.8b", 4096, 28, 16, 0.25),
    "12.8b": _polyglot("12.8b", 5120, 40, 40, 0.5),
}

