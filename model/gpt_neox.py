"""A plain PyTorch GPT-NeoX decoder with Hugging Face parameter names.

The module knows nothing about DeepSpeed, ranks or training files: tensor parallelism,
ZeRO and checkpointing are applied from ``train/``. Parameter names equal the names in a
Hugging Face GPT-NeoX checkpoint, so export is a save and parity with transformers is a
``load_state_dict``.

One layer with the parallel residual (Polyglot-Ko, GPT-J, Pythia)::

            x ───────────────┬────────────────────────┐
            │                │                        │
      input_layernorm  post_attention_layernorm       │
            │                │                        │
        attention           mlp                       │
            │                │                        │
            └──────── + ─────┴───────── + ────────────┘
                                        │
                                  x + attn + mlp

Fused QKV layout: ``query_key_value`` maps hidden -> 3 * hidden, and its output is laid out
per head as ``[num_heads, 3, head_dim]`` (q, k, v of head 0, then head 1, ...). A column split
of that weight across tensor-parallel ranks therefore keeps whole heads on each rank.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from model.config import ModelConfig
from model.init import init_values, materialize


def rotary_cos_sin(
    seq_len: int, dims: int, base: float, device: torch.device, dtype: torch.dtype, offset: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables of shape (T, dims), computed in fp32 then cast (as transformers does)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, dims, 2, device=device, dtype=torch.float32) / dims))
    t = torch.arange(offset, offset + seq_len, device=device, dtype=torch.float32)
    freqs = torch.outer(t, inv_freq)  # (T, dims/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (T, dims): the two halves rotate together
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first ``cos.shape[-1]`` dims of x (B, nh, T, hd); the rest pass through."""
    d = cos.shape[-1]
    x_rot, x_pass = x[..., :d], x[..., d:]
    x1, x2 = x_rot[..., : d // 2], x_rot[..., d // 2 :]
    rotated = torch.cat((-x2, x1), dim=-1)
    return torch.cat((x_rot * cos + rotated * sin, x_pass), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.head_dim = cfg.head_dim
        self.query_key_value = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        qkv = self.query_key_value(x)  # (B, T, 3 * local_hidden)
        # Under tensor parallelism this layer holds only some heads: derive the local count
        # from the local weight instead of the config.
        qkv = qkv.view(B, T, -1, 3 * self.head_dim).transpose(1, 2)  # (B, nh, T, 3 * hd)
        q, k, v = qkv.chunk(3, dim=-1)  # each (B, nh, T, hd)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hd)
        y = y.transpose(1, 2).reshape(B, T, -1)  # (B, T, local_hidden)
        return self.dense(y)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.dense_h_to_4h = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.dense_4h_to_h = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense_4h_to_h(F.gelu(self.dense_h_to_4h(x)))


class Layer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.use_parallel_residual = cfg.use_parallel_residual
        self.input_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.post_attention_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.attention = Attention(cfg)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        attn = self.attention(self.input_layernorm(x), cos, sin)
        if self.use_parallel_residual:
            return x + attn + self.mlp(self.post_attention_layernorm(x))
        x = x + attn
        return x + self.mlp(self.post_attention_layernorm(x))


class Backbone(nn.Module):
    """Embedding, layers and final norm: the ``gpt_neox.*`` part of a checkpoint."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.embed_in = nn.Embedding(cfg.padded_vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.num_layers))
        self.final_layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)


class GPTNeoX(nn.Module):
    """GPT-NeoX causal LM. ``model(input_ids)`` -> logits (B, T, padded_vocab)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.check()
        self.config = cfg
        self.gpt_neox = Backbone(cfg)
        self.embed_out = nn.Linear(cfg.hidden_size, cfg.padded_vocab_size, bias=False)
        # On the meta device there is nothing to initialise: fill it with model.init.materialize
        # (values or a checkpoint, optionally one shard of each tensor), or to_empty + init_weights.
        if self.embed_out.weight.device.type != "meta":
            self.init_weights()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.gpt_neox.embed_in(input_ids)  # (B, T, h)
        # One rotary table per forward, shared by every layer: (T, rotary_dims).
        cfg = self.config
        cos, sin = rotary_cos_sin(input_ids.shape[1], cfg.rotary_dims, cfg.rotary_base, x.device, x.dtype)
        for layer in self.gpt_neox.layers:
            if cfg.activation_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(layer, x, cos, sin, use_reentrant=False)
            else:
                x = layer(x, cos, sin)
        x = self.gpt_neox.final_layer_norm(x)
        return self.embed_out(x)  # (B, T, padded_vocab)

    @torch.no_grad()
    def init_weights(self, seed: int | None = None) -> None:
        """GPT-NeoX initialisation in place (``model.init.init_values``: small init, depth-scaled
        output projections, zero biases, identity LayerNorms). Deterministic for a given seed,
        and equal to what ``model.init.materialize`` gives a model built on the meta device."""
        params = self.named_parameters()
        for (name, p), (source_name, value) in zip(params, init_values(self.config, seed), strict=True):
            assert name == source_name, (name, source_name)
            p.copy_(value)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- Hugging Face format -------------------------------------------------------------------

    def save_pretrained(self, path: str, dtype: torch.dtype | None = None, max_shard_bytes: int = 4 << 30) -> None:
        from model.hf_io import save_pretrained

        save_pretrained(self.state_dict(), self.config, path, dtype=dtype, max_shard_bytes=max_shard_bytes)

    @classmethod
    def from_pretrained(cls, path: str, dtype: torch.dtype | None = None) -> GPTNeoX:
        """Load a Hugging Face GPT-NeoX directory one tensor at a time (``dtype``: cast to it;
        default: keep the file's)."""
        from model.hf_io import load_config, open_weights

        cfg = load_config(path)
        with torch.device("meta"):
            model = cls(cfg)
        materialize(model, open_weights(path, [name for name, _ in model.named_parameters()]), dtype=dtype)
        return model
