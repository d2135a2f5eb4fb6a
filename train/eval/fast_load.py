"""Load a model for evaluation with koneox's own code, so that transformers is never imported.

    from train.eval.fast_load import load
    model, tokenizer, loader = load("runs/demo/hf", device="cpu")
    loader  # {"model": "koneox", "tokenizer": "tokenizers"}

Importing transformers and its GPT-NeoX code takes 3-9 s on a busy machine: more than loading
a tiny model and scoring a whole KoBEST task with it. Each part is loaded the fast way where
that gives what transformers would give, and by transformers otherwise (``loader["why"]``
says why)::

    source                               model                               tokenizer
    HF directory, model_type gpt_neox    model.GPTNeoX, weights read by      tokenizers.Tokenizer of
      in a shape koneox's config reads     model.hf_io.open_weights as         tokenizer.json, when
                                           model.init_from reads them          transformers uses it as is
    training checkpoint or run           train.export.load_model             the run's tokenizer, same rule
    any other architecture               AutoModelForCausalLM                AutoTokenizer

The model is wrapped in :class:`CausalLM`, which is called the way train/eval/scoring.py calls a
transformers causal LM; the tokenizer is a :class:`Tokenizer` with the part of a transformers
tokenizer the evaluator uses. Equality with transformers (token ids, log-likelihoods to 1e-5 in
fp32) is checked in tests/test_eval_fast_load.py.

When transformers uses tokenizer.json as is: ``tokenizer_config.json`` names the plain class
(``PreTrainedTokenizerFast``, or ``TokenizersBackend`` as transformers 5 writes it; no class, or a
model-specific one such as ``GPTNeoXTokenizer``, may rebuild the normaliser or the
post-processor), no remote code, ``split_special_tokens`` off, and every special token it names
(in tokenizer_config.json, or special_tokens_map.json in the older layout) already a special added
token of tokenizer.json with the other flags off: transformers adds each special token that way, so
adding it again changes nothing, while adding a missing one would change how text is split.
Encoding is then ``encode_batch`` with truncation and padding off, as transformers calls it:
``add_special_tokens`` applies tokenizer.json's post-processor.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from model.gpt_neox import rotary_cos_sin

PLAIN_TOKENIZER_CLASSES = ("PreTrainedTokenizerFast", "TokenizersBackend")
SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
EXTRA_KEYS = ("additional_special_tokens", "extra_special_tokens")
FLAGS = ("special", "normalized", "lstrip", "rstrip", "single_word")
SPECIAL_FLAGS = (True, False, False, False, False)  # how transformers adds a special token
NO_MAX_LENGTH = int(1e30)  # transformers' model_max_length when the tokenizer sets none
ROPE_TYPES = (None, "default")  # scaled rotary variants are transformers-only


class Fallback(Exception):  # noqa: N818 (a decision, not an error)
    """The fast path cannot give what transformers would; the message says why."""


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise Fallback(f"{path}: unreadable ({e})") from None
    if not isinstance(data, dict):
        raise Fallback(f"{path}: not a JSON object")
    return data


def _flags(token: Any) -> tuple[bool, ...]:
    """FLAGS of a tokenizers AddedToken or of its JSON form."""
    if isinstance(token, dict):
        return tuple(bool(token.get(n, False)) for n in FLAGS)
    return tuple(bool(getattr(token, n)) for n in FLAGS)


def _content(value: Any) -> str | None:
    """A special token's text: a string, or an AddedToken dict ``{"content": ...}``."""
    if isinstance(value, dict):
        return value.get("content")
    return None if value is None else str(value)


# -- tokenizer ------------------------------------------------------------------------------------


class Tokenizer:
    """What the evaluator uses of a transformers tokenizer, on a ``tokenizers.Tokenizer``:
    ``tok(text or texts, add_special_tokens=...)["input_ids"]``, ``decode``, the special tokens
    and their ids (``bos_token_id`` ...; None when not set), ``model_max_length``."""

    def __init__(self, backend: Any, special: dict[str, str | None], model_max_length: int, name_or_path: str):
        self.backend = backend
        self.model_max_length = model_max_length
        self.name_or_path = name_or_path
        for key in SPECIAL_KEYS:
            content = special.get(key)
            setattr(self, key, content)
            setattr(self, f"{key}_id", None if content is None else backend.token_to_id(content))

    def __call__(self, text: str | Sequence[str], add_special_tokens: bool = True) -> dict[str, Any]:
        batch = [text] if isinstance(text, str) else list(text)
        ids = [e.ids for e in self.backend.encode_batch(batch, add_special_tokens=add_special_tokens)]
        return {"input_ids": ids[0] if isinstance(text, str) else ids}

    def decode(self, ids: int | Sequence[int], skip_special_tokens: bool = False) -> str:
        return self.backend.decode([ids] if isinstance(ids, int) else list(ids), skip_special_tokens=skip_special_tokens)

    def __len__(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def __repr__(self) -> str:
        return f"Tokenizer({self.name_or_path!r}, vocab {len(self)}, bos {self.bos_token!r}, eos {self.eos_token!r})"


def load_tokenizer(path: str | Path) -> Tokenizer:
    """The tokenizer of a directory with tokenizer.json, or :class:`Fallback` naming why
    transformers might tokenize differently (module docstring)."""
    path = Path(path)
    if not (path / "tokenizer.json").is_file():
        raise Fallback(f"{path}: no tokenizer.json")
    config = _read_json(path / "tokenizer_config.json")
    cls = config.get("tokenizer_class")
    if cls not in PLAIN_TOKENIZER_CLASSES:
        raise Fallback(f"{path / 'tokenizer_config.json'}: tokenizer_class {cls!r} is not one of "
                       f"{', '.join(PLAIN_TOKENIZER_CLASSES)}")
    if config.get("auto_map"):
        raise Fallback(f"{path / 'tokenizer_config.json'}: remote tokenizer code (auto_map)")
    if config.get("split_special_tokens"):
        raise Fallback(f"{path / 'tokenizer_config.json'}: split_special_tokens is set")
    # The special tokens, read as transformers reads them: tokenizer_config.json, and
    # special_tokens_map.json over it only in the older layout without added_tokens_decoder.
    named = {k: v for k, v in config.items() if k.endswith("_token") or k in EXTRA_KEYS}
    if "added_tokens_decoder" not in config:
        named.update(_read_json(path / "special_tokens_map.json"))
    special = {k: _content(named.get(k)) for k in SPECIAL_KEYS}
    required = [c for k, v in named.items() if isinstance(v, (str, dict)) and (c := _content(v)) is not None]
    for k in EXTRA_KEYS:
        extra = named.get(k) or []
        required += [_content(t) for t in (extra.values() if isinstance(extra, dict) else extra)]

    from tokenizers import Tokenizer as Backend

    backend = Backend.from_file(str(path / "tokenizer.json"))
    added = {t.content: (i, _flags(t)) for i, t in backend.get_added_tokens_decoder().items()}
    for content in required:
        if added.get(content, (None, None))[1] != SPECIAL_FLAGS:
            raise Fallback(f"{path}: special token {content!r} is not in tokenizer.json as a special added token "
                           "with default flags")
    for idx, tok in (config.get("added_tokens_decoder") or {}).items():
        if added.get(_content(tok)) != (int(idx), _flags(tok)):
            raise Fallback(f"{path / 'tokenizer_config.json'}: added token {idx} {_content(tok)!r} differs from "
                           "tokenizer.json's")
    # transformers encodes without the truncation or padding a tokenizer.json may carry.
    backend.no_truncation()
    backend.no_padding()
    return Tokenizer(backend, special, int(config.get("model_max_length") or NO_MAX_LENGTH), str(path))


# -- model ----------------------------------------------------------------------------------------


class CausalLM(nn.Module):
    """koneox's :class:`model.GPTNeoX`, called as train/eval/scoring.py calls a transformers causal
    LM: ``model(input_ids=ids, logits_to_keep=k).logits`` -> (B, k or T, V), where ``k`` > 0 puts
    the output head on the last ``k`` positions only (the head is the largest matmul of a small
    model). ``config`` is the model's ModelConfig (``max_position_embeddings`` is the window)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.train(model.training)  # the wrapper reports the model's mode, not nn.Module's default

    @property
    def config(self) -> Any:
        return self.model.config

    def forward(self, input_ids: torch.Tensor, logits_to_keep: int = 0) -> SimpleNamespace:
        m, cfg = self.model, self.model.config
        x = m.gpt_neox.embed_in(input_ids)  # (B, T, h)
        cos, sin = rotary_cos_sin(input_ids.shape[1], cfg.rotary_dims, cfg.rotary_base, x.device, x.dtype)
        for layer in m.gpt_neox.layers:
            x = layer(x, cos, sin)
        if logits_to_keep:
            x = x[:, -logits_to_keep:]  # (B, k, h): LayerNorm and head are per position
        return SimpleNamespace(logits=m.embed_out(m.gpt_neox.final_layer_norm(x)))  # (B, k or T, V)


class skip_init(TorchFunctionMode):  # noqa: N801 (used as a context manager)
    """Skip ``torch.nn.init`` (every nn.Linear and nn.Embedding initialises itself in ``__init__``)
    while a model is built on the meta device, where there is nothing to initialise: torch runs
    ``normal_`` on a meta tensor through a Python decomposition whose first call imports
    torch._dynamo and sympy, about 4 s on a busy machine, longer than the rest of a tiny model's
    evaluation. The weights come from the files afterwards."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if getattr(func, "__module__", None) == "torch.nn.init":
            return args[0] if args else kwargs["tensor"]
        return func(*args, **kwargs)


def _hf_precision(hf: dict[str, Any]) -> str:
    """The precision a Hugging Face config.json was saved in, as koneox names it."""
    saved = str(hf.get("dtype") or hf.get("torch_dtype") or "float32")
    return {"bfloat16": "bf16", "float16": "fp16"}.get(saved, "fp32")


def load_gpt_neox(path: str | Path, device: str, dtype: str | None = None) -> CausalLM:
    """A Hugging Face GPT-NeoX directory as koneox's model on ``device``, in the dtype
    train.generate.load gives transformers (train.export.inference_dtype of the saved dtype), or
    :class:`Fallback` for a config koneox's GPTNeoX does not implement."""
    from dataclasses import replace

    from model import GPTNeoX, ModelConfig, ModelConfigError
    from model.hf_io import CheckpointError, open_weights
    from model.init import materialize
    from train.export import inference_dtype

    path = Path(path)
    hf = _read_json(path / "config.json")
    if hf.get("model_type") != "gpt_neox":
        raise Fallback(f"{path / 'config.json'}: model_type {hf.get('model_type')!r}, not gpt_neox")
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type"))
    if rope_type not in ROPE_TYPES:
        raise Fallback(f"{path / 'config.json'}: rope type {rope_type!r}")
    for key, supported in (("attention_bias", True), ("quantization_config", None)):
        if hf.get(key, supported) != supported:
            raise Fallback(f"{path / 'config.json'}: {key} {hf[key]!r}")
    try:
        # The head has exactly the file's rows: koneox exports are padded already, others may not be.
        cfg = replace(ModelConfig.from_hf_dict(hf, source=str(path / "config.json")), pad_vocab_multiple=1)
        torch_dtype, _ = inference_dtype(device, _hf_precision(hf), dtype)
        with torch.device("meta"), skip_init():
            model = GPTNeoX(cfg)
        materialize(model, open_weights(path, [n for n, _ in model.named_parameters()]), dtype=torch_dtype,
                    device=device)
    except (ModelConfigError, CheckpointError) as e:
        raise Fallback(str(e)) from None
    return CausalLM(model).eval()


# -- either source --------------------------------------------------------------------------------


def load(source: str | Path, device: str = "cpu", dtype: str | None = None) -> tuple[nn.Module, Any, dict[str, Any]]:
    """(model, tokenizer, info) from a Hugging Face directory or a training checkpoint or run.

    ``info``: ``kind`` ('huggingface' or 'checkpoint'; a checkpoint adds ``checkpoint``, ``step``,
    ``epoch``) and ``loader``: ``{"model": "koneox" | "transformers", "tokenizer": "tokenizers" |
    "transformers"}``, with ``why`` when a part fell back to transformers. ``dtype`` ('fp32',
    'bf16', 'fp16'; default: train.export.inference_dtype's choice) as in train.generate.load."""
    from train.export import ExportError, inference_dtype, load_model, open_checkpoint

    source = Path(source)
    if (source / "config.json").is_file():
        try:
            model: nn.Module = load_gpt_neox(source, device, dtype)
        except Fallback as e:  # another architecture: transformers loads both parts, as before
            from train.generate import load as transformers_load

            model, tok = transformers_load(source, device=device, dtype=dtype)
            return model, tok, {"kind": "huggingface",
                                "loader": {"model": "transformers", "tokenizer": "transformers", "why": str(e)}}
        info: dict[str, Any] = {"kind": "huggingface"}
        tokenizer_dir = source
    else:
        c = open_checkpoint(source)
        if c.tokenizer_path is None:
            raise ExportError(f"{c.path}: the run recorded no tokenizer (tokenizer.path), so prompts cannot be encoded")
        torch_dtype, _ = inference_dtype(device, c.precision, dtype)
        with skip_init():  # load_model builds the model on the meta device, then assigns the weights
            model = CausalLM(load_model(c.path, torch_dtype)[0].to(device)).eval()
        info = {"kind": "checkpoint", "checkpoint": str(c.path), "step": c.step, "epoch": c.epoch}
        tokenizer_dir = c.tokenizer_path
    info["loader"] = {"model": "koneox", "tokenizer": "tokenizers"}
    try:
        tok: Any = load_tokenizer(tokenizer_dir)
    except Fallback as e:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
        info["loader"].update(tokenizer="transformers", why=str(e))
    return model, tok, info
