"""Chat Vector (REFERENCE §8, arXiv 2310.04799): instruction following by weight arithmetic.

    chat_vector = chat - base                        koneox chat-vector extract --base B --chat C --out V
    new = target + sum_k ratio_k * chat_vector_k     koneox chat-vector apply --target T --vector V --out O
    new = target + ratio * (chat - base)             koneox chat-vector --base B --chat C --target T --out O

    from model.chat_vector import extract, apply, merge
    merge("llama2", "llama2-chat", "llama2-ko", "llama2-ko-chat", ratio=1.0)

base is an original pretrained model, chat its chat-tuned version and target a model continually
pretrained from base on Korean. Any causal-LM architecture works as long as the three share
parameter names and shapes (GPT-NeoX as koneox exports it, Llama, ...).

Streaming. Nothing holds a whole model: every tensor is read in row blocks of at most
``chunk_elements`` elements (``safe_open(...).get_slice(name)[a:b]``), added in fp32 and written
straight into the output shard, whose safetensors header is known before any data is::

    for each target tensor, for rows [a, b):               RAM: the block being copied from
        acc  = fp32(target[a:b])                                 each input's mapping, three fp32
        acc += ratio_k * (fp32(chat[a:b]) - fp32(base[a:b]))     block buffers and one in the
        write acc.to(out dtype) at the tensor's offset           output dtype, reused throughout

Each block opens its file anew: ``safe_open`` memory-maps the file, and pages read through a
mapping that stays open count to the process's RSS until it is closed (measured: holding one
open while reading a 1 GB file took RSS to 1.25 GB; reopening per block kept it at 0.24 GB). A
legacy ``pytorch_model.bin`` is memory-mapped (``torch.load(weights_only=True, mmap=True)``), so
its pages do count. The arithmetic is the same per element whatever the blocks, so the result
is bit-identical to ``target.float() + ratio * (chat.float() - base.float())`` on whole tensors.

Vocabulary. When the target's embedding rows differ from the base's (a Korean vocabulary
extension), the vector cannot be added as is. ``embeddings="skip"`` leaves the target's input
embedding and LM head untouched; ``embeddings="matched"`` adds the vector only to rows of tokens
found in both vocabularies, matched by token string (``row_map``), and new tokens keep the
target's rows. Which tensors are the input embedding and LM head is asked of ``transformers``
for the target's architecture (``embedding_tensors``); a tied pair is one tensor, handled once.
Any other difference in names or shapes is refused, listing every tensor.

Outputs appear under their final name only when complete (``data.stage``): written to
``OUT.tmp``, marked complete, then renamed. A vector directory::

    model-0000i-of-0000n.safetensors, model.safetensors.index.json   chat - base (fp32 by default)
    chat_vector.json     what it was made from: base, chat, architecture, dtype, tensors
    base/                the base's config and tokenizer (matched rows need its vocabulary)
    chat/                the chat model's config, tokenizer, chat template, generation config

A merged model: the weights in the target's dtype (or ``dtype``), sharded with an index; the
target's config.json and tokenizer; the chat model's chat template, generation config and
EOS/pad tokens (ids mapped into the target's vocabulary by token string), so the merged model
chats the way the chat model does; and ``koneox_chat_vector.json``, the report.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import struct
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from data.stage import mark_complete, require_complete, tmp_path
from model.hf_io import parse_size as hf_parse_size

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
EMBEDDING_MODES = ("all", "skip", "matched")
INDEX = "model.safetensors.index.json"
VECTOR_META = "chat_vector.json"
REPORT = "koneox_chat_vector.json"
PRODUCER_EXTRACT = "koneox chat-vector extract"
PRODUCER_MERGE = "koneox chat-vector"
VECTOR_FORMAT = "koneox-chat-vector/1"
CHUNK_ELEMENTS = 8 << 20
"""Elements per row block (32 MiB in fp32): large enough for full disk speed, small enough that a
block of each input plus two fp32 blocks stay far below one large tensor."""

# Buffers old checkpoints stored that transformers recomputes on load: no weights, not compared.
IGNORED_SUFFIXES = ("attention.bias", "attention.masked_bias", "rotary_emb.inv_freq")
# The files of a Hugging Face directory besides its weights that a merged model or vector keeps.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "vocab.txt", "merges.txt", "tokenizer.model", "spiece.model",
                   "sentencepiece.bpe.model")
CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")
CHAT_TEMPLATE_DIR = "additional_chat_templates"
TOKEN_ID_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")

_ST_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
_ST_NAMES = {v: k for k, v in _ST_DTYPES.items()}


class ChatVectorError(ValueError):
    """Inputs that cannot be combined: missing files, other architectures, mismatching tensors."""


def parse_size(text: str) -> int:
    """``model.hf_io.parse_size``, its error a ChatVectorError."""
    try:
        return hf_parse_size(text)
    except ValueError as e:
        raise ChatVectorError(str(e)) from None


# -- reading model directories one block at a time ---------------------------------------------


@dataclass(frozen=True)
class TensorInfo:
    file: Path
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * _itemsize(self.dtype)


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _safetensors_header(file: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (8-byte little-endian length, then JSON)."""
    with open(file, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ChatVectorError(f"{file}: not a safetensors file (shorter than 8 bytes)")
        (n,) = struct.unpack("<Q", head)
        try:
            return json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ChatVectorError(f"{file}: not a safetensors file (bad header: {e})") from e


def _weight_files(path: Path) -> list[Path]:
    for index_name, single in ((INDEX, "model.safetensors"), ("pytorch_model.bin.index.json", "pytorch_model.bin")):
        index = path / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError) as e:
                raise ChatVectorError(f"{index}: not a weight index ({e})") from e
            names = sorted(set(weight_map.values()))
            missing = [n for n in names if not (path / n).is_file()]
            if missing:
                raise ChatVectorError(f"{index}: lists shards that are missing: {', '.join(missing)}")
            return [path / n for n in names]
        if (path / single).is_file():
            return [path / single]
    raise ChatVectorError(f"{path}: no model.safetensors[.index.json] or pytorch_model.bin[.index.json]")


class Weights:
    """The tensors of one Hugging Face model (or vector) directory, read in row blocks.

    Names, shapes and dtypes come from the safetensors headers (no data read); ``read_into`` opens
    the file for each block so no mapping outlives it (see the module docstring)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_dir():
            raise ChatVectorError(f"{self.path}: not a directory")
        self.tensors: dict[str, TensorInfo] = {}
        self.ignored: list[str] = []
        self._bins: dict[Path, dict[str, torch.Tensor]] = {}
        self.bytes_read = 0
        for file in _weight_files(self.path):
            for name, info in self._scan(file):
                if name.endswith(IGNORED_SUFFIXES):
                    self.ignored.append(name)
                elif name in self.tensors:
                    raise ChatVectorError(f"{self.path}: {name} is in both {self.tensors[name].file.name} "
                                          f"and {file.name}")
                else:
                    self.tensors[name] = info

    def _scan(self, file: Path) -> Iterator[tuple[str, TensorInfo]]:
        if file.suffix == ".safetensors":
            header = _safetensors_header(file)
            entries = sorted(((k, v) for k, v in header.items() if k != "__metadata__"),
                             key=lambda kv: kv[1]["data_offsets"][0])  # file order: sequential reads
            for name, v in entries:
                if v["dtype"] not in _ST_DTYPES:
                    raise ChatVectorError(f"{file}: {name} has dtype {v['dtype']}, which this tool cannot add")
                yield name, TensorInfo(file, tuple(v["shape"]), _ST_DTYPES[v["dtype"]])
        else:
            for name, t in self._bin(file).items():
                yield name, TensorInfo(file, tuple(t.shape), t.dtype)

    def _bin(self, file: Path) -> dict[str, torch.Tensor]:
        if file not in self._bins:
            try:
                self._bins[file] = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
            except Exception as e:  # a pickle with other objects, a truncated file, a non-zip archive
                raise ChatVectorError(f"{file}: cannot be read with torch.load(weights_only=True, mmap=True): "
                                      f"{e}") from e
        return self._bins[file]

    def config(self) -> dict[str, Any]:
        file = self.path / "config.json"
        if not file.is_file():
            return {}
        try:
            return json.loads(file.read_text())
        except json.JSONDecodeError as e:
            raise ChatVectorError(f"{file}: invalid JSON ({e})") from e

    def read_into(self, name: str, start: int, stop: int, out: torch.Tensor) -> torch.Tensor:
        """Copy rows [start, stop) of ``name`` (the whole tensor when it is 0-d) into ``out``,
        converting to its dtype (exact from bf16/fp16 to fp32); returns ``out``."""
        info = self.tensors[name]
        self.bytes_read += out.numel() * _itemsize(info.dtype)
        if info.file.suffix == ".safetensors":
            with safe_open(str(info.file), framework="pt") as f:
                out.copy_(f.get_slice(name)[start:stop] if info.shape else f.get_tensor(name))
        else:
            t = self._bin(info.file)[name]
            out.copy_(t[start:stop] if info.shape else t)
        return out


class _Scratch:
    """Block buffers reused for every block. A fresh allocation of a block's size page-faults on
    first touch, which measured as slow as the arithmetic (8M elements: 16 ms to convert bf16 into
    a new fp32 tensor, 9 ms into a reused one)."""

    def __init__(self) -> None:
        self._bufs: dict[tuple[str, torch.dtype], torch.Tensor] = {}

    def get(self, key: str, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
        n = math.prod(shape)
        buf = self._bufs.get((key, dtype))
        if buf is None or buf.numel() < n:
            buf = self._bufs[(key, dtype)] = torch.empty(max(n, 1), dtype=dtype)
        return buf[:n].view(shape)


def _block_shape(shape: tuple[int, ...], start: int, stop: int) -> tuple[int, ...]:
    return (stop - start, *shape[1:]) if shape else ()


def _row_blocks(shape: tuple[int, ...], chunk_elements: int) -> Iterator[tuple[int, int]]:
    if not shape:
        yield 0, 1
        return
    per_row = max(1, math.prod(shape[1:]))
    step = max(1, chunk_elements // per_row)
    for a in range(0, shape[0], step):
        yield a, min(a + step, shape[0])


def _gather_rows(read: Callable[[int, int], torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
    """Rows ``ids`` (distinct, any order) through ``read(a, b)``, one read per run of consecutive
    ids, so a vocabulary that kept the old ids needs one read per block."""
    order = torch.argsort(ids)
    s = ids[order]
    breaks = ((s[1:] - s[:-1]) != 1).nonzero().flatten().add(1).tolist()
    starts, ends = [0, *breaks], [*breaks, len(s)]
    parts = [read(int(s[a]), int(s[e - 1]) + 1) for a, e in zip(starts, ends, strict=True)]
    rows = parts[0] if len(parts) == 1 else torch.cat(parts)
    out = torch.empty_like(rows)
    out[order] = rows
    return out


# -- where a vector comes from ------------------------------------------------------------------


class _Delta:
    """``chat - base`` in fp32 for any block of rows: computed from the two models (one step) or
    read from a vector directory."""

    def __init__(self, label: str, shapes: dict[str, tuple[int, ...]], base_dir: Path, chat_dir: Path,
                 model_type: str, architectures: list[str]):
        self.label = label
        self.shapes = shapes
        self.base_dir = base_dir  # holds the base's config.json and tokenizer
        self.chat_dir = chat_dir  # holds the chat model's chat template, generation config, tokenizer
        self.model_type = model_type
        self.architectures = architectures
        self.untouched: set[str] = set()

    @property
    def bytes_read(self) -> int:
        raise NotImplementedError

    def rows(self, name: str, start: int, stop: int, out: torch.Tensor) -> torch.Tensor:
        """Fill the fp32 ``out`` with rows [start, stop) of the vector; returns ``out``."""
        raise NotImplementedError

    def gather(self, name: str, ids: torch.Tensor) -> torch.Tensor:
        shape = self.shapes[name]
        return _gather_rows(lambda a, b: self.rows(name, a, b, torch.empty(_block_shape(shape, a, b))), ids)


class _PairDelta(_Delta):
    def __init__(self, base: Weights, chat: Weights):
        cfg = base.config()
        check_pair(base, chat)
        shapes = {n: i.shape for n, i in base.tensors.items() if i.dtype.is_floating_point}
        super().__init__(f"{chat.path} - {base.path}", shapes, base.path, chat.path,
                         str(cfg.get("model_type", "")), list(cfg.get("architectures") or []))
        self.base, self.chat = base, chat
        self.untouched = {n for n, i in base.tensors.items() if not i.dtype.is_floating_point}
        self._scratch = _Scratch()

    @property
    def bytes_read(self) -> int:
        return self.base.bytes_read + self.chat.bytes_read

    def rows(self, name: str, start: int, stop: int, out: torch.Tensor) -> torch.Tensor:
        # Both converted to fp32 first (exact), then subtracted: chat.float() - base.float().
        b = self.base.read_into(name, start, stop, self._scratch.get("base", torch.float32, tuple(out.shape)))
        return self.chat.read_into(name, start, stop, out).sub_(b)


class _StoredDelta(_Delta):
    def __init__(self, vector: Path):
        if not vector.is_dir():
            raise ChatVectorError(f"{vector}: not a directory")
        meta_file = vector / VECTOR_META
        if not meta_file.is_file():
            raise ChatVectorError(f"{vector}: not a chat vector (no {VECTOR_META}); make one with "
                                  f"`{PRODUCER_EXTRACT}`")
        require_complete(vector, PRODUCER_EXTRACT)
        meta = json.loads(meta_file.read_text())
        if meta.get("format") != VECTOR_FORMAT:
            raise ChatVectorError(f"{meta_file}: format {meta.get('format')!r}, expected {VECTOR_FORMAT!r}")
        self.weights = Weights(vector)
        shapes = {n: i.shape for n, i in self.weights.tensors.items()}
        super().__init__(str(vector), shapes, vector / "base", vector / "chat", str(meta.get("model_type", "")),
                         list(meta.get("architectures") or []))
        self.untouched = set(meta.get("untouched", []))
        self.meta = meta

    @property
    def bytes_read(self) -> int:
        return self.weights.bytes_read

    def rows(self, name: str, start: int, stop: int, out: torch.Tensor) -> torch.Tensor:
        return self.weights.read_into(name, start, stop, out)


# -- checks ---------------------------------------------------------------------------------------


def _name_list(names: Sequence[str]) -> str:
    return ", ".join(sorted(names))


def _differences(a_label: str, a: dict[str, tuple[int, ...]], b_label: str, b: dict[str, tuple[int, ...]],
                 allow_rows: Collection[str] = ()) -> list[str]:
    """Every missing, extra and differently shaped tensor between ``a`` and ``b``; tensors in
    ``allow_rows`` may differ in their first dimension only."""
    out = []
    only_a, only_b = sorted(a.keys() - b.keys()), sorted(b.keys() - a.keys())
    if only_a:
        out.append(f"only in {a_label}: {_name_list(only_a)}")
    if only_b:
        out.append(f"only in {b_label}: {_name_list(only_b)}")
    shapes = []
    for name in sorted(a.keys() & b.keys()):
        sa, sb = a[name], b[name]
        if sa == sb or (name in allow_rows and len(sa) == len(sb) and sa[1:] == sb[1:]):
            continue
        shapes.append(f"{name} {list(sa)} vs {list(sb)}")
    if shapes:
        out.append(f"shapes differ ({a_label} vs {b_label}): {', '.join(shapes)}")
    return out


def check_pair(base: Weights, chat: Weights) -> None:
    """The chat model must be the base model fine-tuned: same architecture, names and shapes."""
    cb, cc = base.config(), chat.config()
    if cb.get("model_type") and cc.get("model_type") and cb["model_type"] != cc["model_type"]:
        raise ChatVectorError(f"{chat.path} is a {cc['model_type']} model, the base {base.path} a "
                              f"{cb['model_type']} model: the chat model must be the base fine-tuned")
    diff = _differences("base", {n: i.shape for n, i in base.tensors.items()},
                        "chat", {n: i.shape for n, i in chat.tensors.items()})
    if diff:
        raise ChatVectorError(f"{base.path} and {chat.path} do not hold the same tensors: {'; '.join(diff)}")


def _describe_arch(model_type: str, architectures: list[str]) -> str:
    return f"{model_type or 'unknown'} model ({', '.join(architectures) or 'no architectures in config.json'})"


def _check_against_target(target: Weights, delta: _Delta, embeddings: set[str]) -> None:
    tcfg = target.config()
    if delta.model_type and tcfg.get("model_type") and delta.model_type != tcfg["model_type"]:
        raise ChatVectorError(
            f"the vector {delta.label} was made from a {_describe_arch(delta.model_type, delta.architectures)}; "
            f"the target {target.path} is a {_describe_arch(tcfg['model_type'], list(tcfg.get('architectures') or []))}")
    tshapes = {n: i.shape for n, i in target.tensors.items() if n not in delta.untouched}
    diff = _differences("target", tshapes, "vector", delta.shapes, allow_rows=embeddings)
    if diff:
        hint = ("; if the target extended the vocabulary, pass --skip-embeddings or --embedding-rows matched"
                if not embeddings else "")
        raise ChatVectorError(f"the target {target.path} and the vector {delta.label} do not match: "
                              f"{'; '.join(diff)}{hint}")


# -- vocabularies and embeddings ------------------------------------------------------------------


def _has_tokenizer(path: Path) -> bool:
    return any((path / n).is_file() for n in TOKENIZER_FILES)


def read_vocab(path: str | os.PathLike) -> dict[str, int] | None:
    """token string -> id of the tokenizer in ``path`` (added tokens included), or None when it
    has none. tokenizer.json is read as JSON; other formats through ``transformers``."""
    path = Path(path)
    file = path / "tokenizer.json"
    if file.is_file():
        data = json.loads(file.read_text(encoding="utf-8"))
        vocab = data.get("model", {}).get("vocab", {})
        # Unigram lists [piece, score] pairs in id order; BPE, WordPiece and WordLevel map piece -> id.
        out = {piece: i for i, (piece, _) in enumerate(vocab)} if isinstance(vocab, list) else dict(vocab)
        for added in data.get("added_tokens", []):
            out[added["content"]] = int(added["id"])
        return out
    if not _has_tokenizer(path):
        return None
    from transformers import AutoTokenizer

    try:
        return dict(AutoTokenizer.from_pretrained(str(path)).get_vocab())
    except Exception as e:  # files that do not make a tokenizer
        raise ChatVectorError(f"{path}: its tokenizer cannot be loaded ({type(e).__name__}: {e})") from e


def row_map(target_vocab: dict[str, int], source_vocab: dict[str, int], target_rows: int,
            source_rows: int) -> torch.Tensor:
    """For each target row, the source row of the same token string, or -1 (a new token, or a
    padding row beyond the vocabulary)."""
    pairs = [(j, source_vocab[t]) for t, j in target_vocab.items() if t in source_vocab]
    pairs = [(j, i) for j, i in pairs if 0 <= j < target_rows and 0 <= i < source_rows]
    out = torch.full((target_rows,), -1, dtype=torch.int64)
    if pairs:
        rows = torch.tensor(pairs, dtype=torch.int64)  # (matched, 2): target row, source row
        out[rows[:, 0]] = rows[:, 1]
    return out


def embedding_tensors(model_dir: str | os.PathLike, shapes: dict[str, tuple[int, ...]]) -> list[str]:
    """Names, as stored in ``model_dir``'s files, of its input embedding and LM head (and the LM
    head's bias if it has one): asked of the ``transformers`` model of its config.json, built on
    the meta device. A tied pair is one tensor and is listed once. A name ``transformers`` uses
    only in memory (GPT-NeoX's ``lm_head`` is ``embed_out`` in files) is matched to the one
    tensor of the same shape that the in-memory model does not name."""
    from transformers import AutoConfig, AutoModelForCausalLM

    model_dir = Path(model_dir)
    try:
        config = AutoConfig.from_pretrained(str(model_dir))
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except Exception as e:  # an architecture transformers does not know, a broken config
        raise ChatVectorError(f"{model_dir}: cannot tell which tensors are the input embedding and LM head: "
                              f"transformers cannot build its model ({type(e).__name__}: {e})") from e
    wanted = [model.get_input_embeddings().weight]
    head = model.get_output_embeddings()
    if head is not None:
        wanted += [p for p in (head.weight, getattr(head, "bias", None)) if isinstance(p, torch.nn.Parameter)]
    memory = {n: (p, tuple(p.shape)) for n, p in model.named_parameters(remove_duplicate=False)}
    unnamed = {n: s for n, s in shapes.items() if n not in memory}
    found: list[str] = []
    for param in {id(p): p for p in wanted}.values():
        aliases = [n for n, (p, _) in memory.items() if p is param]
        in_files = [n for n in aliases if n in shapes]
        if not in_files:
            candidates = [n for n, s in unnamed.items() if s == tuple(param.shape)]
            if len(candidates) != 1:
                raise ChatVectorError(
                    f"{model_dir}: no tensor in its weight files holds {' / '.join(aliases)} "
                    f"(shape {list(param.shape)}); candidates: {_name_list(candidates) or 'none'}")
            in_files = candidates
        found += [n for n in in_files if n not in found]
    return found


# -- writing safetensors shards block by block ----------------------------------------------------


@dataclass(frozen=True)
class _OutTensor:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * _itemsize(self.dtype)


def _plan_shards(tensors: list[_OutTensor], max_shard_bytes: int) -> list[list[_OutTensor]]:
    """Tensors per shard, in order; a tensor larger than the limit gets a shard of its own."""
    shards: list[list[_OutTensor]] = [[]]
    size = 0
    for t in tensors:
        if shards[-1] and size + t.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += t.nbytes
    return shards


def _write_shards(out: Path, tensors: list[_OutTensor], blocks: Callable[[_OutTensor], Iterator[torch.Tensor]],
                  max_shard_bytes: int, progress: Callable[[int], None]) -> tuple[int, int]:
    """Write ``tensors`` as ``model-0000i-of-0000n.safetensors`` plus the index. Every header is
    written first, from the planned shapes; ``blocks(t)`` then yields ``t``'s rows in order, in
    ``t.dtype``, and each is appended as it comes. Returns (shards, bytes)."""
    shards = _plan_shards(tensors, max_shard_bytes)
    weight_map: dict[str, str] = {}
    total = 0
    for i, shard in enumerate(shards, 1):
        fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for t in shard:
            header[t.name] = {"dtype": _ST_NAMES[t.dtype], "shape": list(t.shape),
                              "data_offsets": [offset, offset + t.nbytes]}
            offset += t.nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned, as safetensors writes it
        with open(out / fname, "wb") as f:
            f.write(struct.pack("<Q", len(raw)))
            f.write(raw)
            for t in shard:
                written = 0
                for block in blocks(t):
                    if block.dtype != t.dtype:
                        raise AssertionError(f"{t.name}: block in {block.dtype}, planned {t.dtype}")
                    data = block.contiguous().reshape(-1).view(torch.uint8).numpy()
                    f.write(data)
                    written += data.nbytes
                if written != t.nbytes:
                    raise AssertionError(f"{t.name}: wrote {written} bytes, planned {t.nbytes}")
                weight_map[t.name] = fname
                progress(written)
        total += offset
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / INDEX).write_text(json.dumps(index, indent=2) + "\n")
    return len(shards), total


class _Progress:
    """A line every ``every`` seconds: tensors done, bytes written, rate."""

    def __init__(self, label: str, tensors: int, log: Callable[[str], Any], every: float = 10.0):
        self.label, self.total, self.log, self.every = label, tensors, log, every
        self.done = self.bytes = 0
        self.start = self.last = time.perf_counter()

    def __call__(self, nbytes: int) -> None:
        self.done += 1
        self.bytes += nbytes
        now = time.perf_counter()
        if now - self.last >= self.every and self.done < self.total:
            self.last = now
            self.log(f"{self.label}: {self.done}/{self.total} tensors, {self.bytes / 1e9:.2f} GB written, "
                     f"{self.bytes / 1e6 / (now - self.start):.0f} MB/s")


# -- atomic output directories --------------------------------------------------------------------


def _check_out(out: Path, overwrite: bool, inputs: Sequence[Path]) -> None:
    resolved = out.resolve()
    for p in inputs:
        if p.resolve() == resolved:
            raise ChatVectorError(f"{out}: the output is one of the inputs; write to a new directory")
    if out.exists() and not overwrite:
        raise ChatVectorError(f"{out}: exists; pass --overwrite (overwrite=True) to replace it")


@contextlib.contextmanager
def _atomic_dir(out: Path) -> Iterator[Path]:
    """Yield ``OUT.tmp`` (emptied of a killed run's leftovers); when the block succeeds it
    replaces ``out``, when it raises it is deleted. The caller marks it complete inside."""
    tmp = tmp_path(out)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        old = out.with_name(out.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old)
    else:
        os.replace(tmp, out)


def _copy_side_files(src: Path, dst: Path, names: Sequence[str]) -> None:
    """Copy those of the files ``names`` that exist in ``src`` (and its chat template folder)."""
    dst.mkdir(parents=True, exist_ok=True)
    for n in names:
        if (src / n).is_file():
            shutil.copy2(src / n, dst / n)
    if (src / CHAT_TEMPLATE_DIR).is_dir() and any(n in CHAT_TEMPLATE_FILES for n in names):
        shutil.copytree(src / CHAT_TEMPLATE_DIR, dst / CHAT_TEMPLATE_DIR, dirs_exist_ok=True)


# -- the chat model's conversation settings -------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _token_text(value: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or an AddedToken dict."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def carry_chat_settings(out: Path, target_dir: Path, chat_dir: Path) -> dict[str, Any]:
    """Give ``out`` (holding the target's config.json and tokenizer) the chat model's chat template,
    generation config and EOS/pad tokens. Token ids are mapped from the chat model's vocabulary to
    the target's by token string; a token the target lacks keeps the target's setting and is
    reported. Returns what was carried and the warnings."""
    carried: dict[str, Any] = {"warnings": []}
    warn = carried["warnings"].append
    chat_vocab, target_vocab = read_vocab(chat_dir), read_vocab(target_dir)
    same_vocab = chat_vocab is not None and chat_vocab == target_vocab
    chat_tokens = {i: t for t, i in (chat_vocab or {}).items()}

    def remap(key: str, value: Any) -> Any:
        """The target id(s) of the chat model's ``value``; None when none can be found."""
        if value is None or same_vocab:
            return value
        if chat_vocab is None or target_vocab is None:
            warn(f"{key}: cannot map the chat model's id {value} to the target "
                 f"(no tokenizer in {'the chat model' if chat_vocab is None else 'the target'})")
            return None
        ids = value if isinstance(value, list) else [value]
        mapped = []
        for i in ids:
            token = chat_tokens.get(int(i))
            if token is not None and token in target_vocab:
                mapped.append(target_vocab[token])
            else:
                warn(f"{key}: the chat model's token {token or i!r} is not in the target's vocabulary")
        if not mapped:
            return None
        return mapped if isinstance(value, list) else mapped[0]

    # config.json: the target's, with the chat model's EOS and pad ids.
    config = _read_json(out / "config.json")
    chat_config = _read_json(chat_dir / "config.json")
    for key in ("eos_token_id", "pad_token_id"):
        value = remap(key, chat_config.get(key))
        if value is not None:
            config[key] = value
            carried[key] = value
    _write_json(out / "config.json", config)

    # generation_config.json: the chat model's (its EOS list, sampling defaults), ids mapped.
    chat_gen = _read_json(chat_dir / "generation_config.json")
    if chat_gen:
        target_gen = _read_json(target_dir / "generation_config.json")
        for key in TOKEN_ID_KEYS:
            if key in chat_gen:
                value = remap(key, chat_gen[key])
                if value is not None:
                    chat_gen[key] = value
                elif key in target_gen:
                    chat_gen[key] = target_gen[key]
                else:
                    del chat_gen[key]
        _write_json(out / "generation_config.json", chat_gen)
        carried["generation_config"] = {k: chat_gen[k] for k in TOKEN_ID_KEYS if k in chat_gen}

    # Tokenizer: the target's vocabulary with the chat model's template and EOS/pad tokens.
    if not _has_tokenizer(out):
        if _has_tokenizer(chat_dir) or any((chat_dir / n).is_file() for n in CHAT_TEMPLATE_FILES):
            warn("the target has no tokenizer, so the chat template and EOS/pad tokens are not carried")
        return carried
    tok_config = _read_json(out / "tokenizer_config.json") or {"tokenizer_class": "PreTrainedTokenizerFast"}
    chat_tok_config = _read_json(chat_dir / "tokenizer_config.json")
    chat_templates = [n for n in CHAT_TEMPLATE_FILES if (chat_dir / n).is_file()]
    if (chat_dir / CHAT_TEMPLATE_DIR).is_dir():
        chat_templates.append(CHAT_TEMPLATE_DIR)
    if "chat_template" in chat_tok_config:
        chat_templates.append("tokenizer_config.json")
    if chat_templates:
        # One template source only: the target's own is replaced, in whatever form it had.
        tok_config.pop("chat_template", None)
        for n in CHAT_TEMPLATE_FILES:
            (out / n).unlink(missing_ok=True)
        shutil.rmtree(out / CHAT_TEMPLATE_DIR, ignore_errors=True)
        _copy_side_files(chat_dir, out, CHAT_TEMPLATE_FILES)
        if "chat_template" in chat_tok_config:
            tok_config["chat_template"] = chat_tok_config["chat_template"]
    else:
        warn("the chat model has no chat template; the target's (if any) is kept")
    carried["chat_template"] = chat_templates
    special_map = _read_json(out / "special_tokens_map.json")
    for key in ("eos_token", "pad_token"):
        token = _token_text(chat_tok_config.get(key))
        if token is None:
            continue
        if target_vocab is not None and token not in target_vocab:
            warn(f"{key}: the chat model's {token!r} is not in the target's vocabulary; keeping the target's")
            continue
        tok_config[key] = token
        if special_map:
            special_map[key] = token
        carried[key] = token
    _write_json(out / "tokenizer_config.json", tok_config)
    if special_map:
        _write_json(out / "special_tokens_map.json", special_map)
    return carried


# -- the three operations -------------------------------------------------------------------------


def _dtype(name: str | None) -> torch.dtype | None:
    if name is None:
        return None
    if name not in DTYPES:
        raise ChatVectorError(f"dtype {name!r}: choose from {', '.join(DTYPES)}")
    return DTYPES[name]


def _hf_dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def extract(
    base: str | os.PathLike,
    chat: str | os.PathLike,
    out: str | os.PathLike,
    dtype: str | None = None,
    max_shard_size: str = "2GB",
    overwrite: bool = False,
    chunk_elements: int = CHUNK_ELEMENTS,
    log: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Write ``chat - base`` to the vector directory ``out`` (fp32 unless ``dtype``: in bf16 or fp16
    the vector is rounded once, and apply is no longer exact). Returns its chat_vector.json."""
    start = time.perf_counter()
    out, base_dir, chat_dir = Path(out), Path(base), Path(chat)
    _check_out(out, overwrite, [base_dir, chat_dir])
    delta = _PairDelta(Weights(base_dir), Weights(chat_dir))
    vec_dtype = _dtype(dtype) or torch.float32
    names = list(delta.shapes)  # floating tensors, in the base's file order
    plan = [_OutTensor(n, delta.shapes[n], vec_dtype) for n in names]

    scratch = _Scratch()

    def blocks(t: _OutTensor) -> Iterator[torch.Tensor]:
        for a, b in _row_blocks(t.shape, chunk_elements):
            shape = _block_shape(t.shape, a, b)
            d = delta.rows(t.name, a, b, scratch.get("delta", torch.float32, shape))
            yield d if vec_dtype == torch.float32 else scratch.get("out", vec_dtype, shape).copy_(d)

    cfg = delta.base.config()
    with _atomic_dir(out) as tmp:
        shards, nbytes = _write_shards(tmp, plan, blocks, parse_size(max_shard_size),
                                       _Progress("extract", len(plan), log))
        _copy_side_files(base_dir, tmp / "base", ("config.json", *TOKENIZER_FILES))
        _copy_side_files(chat_dir, tmp / "chat", ("config.json", "generation_config.json", *TOKENIZER_FILES,
                                                  *CHAT_TEMPLATE_FILES))
        seconds = time.perf_counter() - start
        meta = {
            "format": VECTOR_FORMAT,
            "base": str(base_dir.resolve()),
            "chat": str(chat_dir.resolve()),
            "model_type": cfg.get("model_type"),
            "architectures": cfg.get("architectures"),
            "vocab_size": cfg.get("vocab_size"),
            "tie_word_embeddings": cfg.get("tie_word_embeddings"),
            "dtype": _hf_dtype_name(vec_dtype),
            "tensors": len(plan),
            "parameters": sum(math.prod(t.shape) for t in plan),
            "untouched": sorted(delta.untouched),
            "ignored": sorted(set(delta.base.ignored)),
            "shards": shards,
            "bytes": nbytes,
            "bytes_read": delta.bytes_read,
            "seconds": round(seconds, 2),
            "read_mb_per_s": round(delta.bytes_read / 1e6 / max(seconds, 1e-9), 1),
        }
        _write_json(tmp / VECTOR_META, meta)
        mark_complete(tmp, PRODUCER_EXTRACT, {"tensors": len(plan), "shards": shards})
    log(f"chat vector {chat_dir} - {base_dir} -> {out}: {meta['parameters']:,} parameters in {shards} shard(s), "
        f"{meta['dtype']}, {seconds:.1f} s")
    return meta


def apply(
    target: str | os.PathLike,
    vectors: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    ratios: Sequence[float] | None = None,
    embeddings: str = "all",
    dtype: str | None = None,
    max_shard_size: str = "2GB",
    overwrite: bool = False,
    chunk_elements: int = CHUNK_ELEMENTS,
    log: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """``target + sum_k ratios[k] * vectors[k]`` into ``out``; the first vector's chat model gives
    the chat template, generation config and EOS/pad tokens. Returns the report."""
    if not vectors:
        raise ChatVectorError("no vector given")
    ratios = [1.0] * len(vectors) if ratios is None else [float(r) for r in ratios]
    if len(ratios) != len(vectors):
        raise ChatVectorError(f"{len(vectors)} vector(s) but {len(ratios)} ratio(s): give one ratio per vector")
    paths = [Path(v) for v in vectors]
    _check_out(Path(out), overwrite, [Path(target), *paths])
    return _merge(Path(target), [_StoredDelta(p) for p in paths], ratios, Path(out), embeddings, dtype,
                  max_shard_size, chunk_elements, log)


def merge(
    base: str | os.PathLike,
    chat: str | os.PathLike,
    target: str | os.PathLike,
    out: str | os.PathLike,
    ratio: float = 1.0,
    embeddings: str = "all",
    dtype: str | None = None,
    max_shard_size: str = "2GB",
    overwrite: bool = False,
    chunk_elements: int = CHUNK_ELEMENTS,
    log: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """One step: ``target + ratio * (chat - base)`` into ``out``, without writing the vector.
    Returns the report."""
    _check_out(Path(out), overwrite, [Path(base), Path(chat), Path(target)])
    delta = _PairDelta(Weights(base), Weights(chat))
    return _merge(Path(target), [delta], [float(ratio)], Path(out), embeddings, dtype, max_shard_size,
                  chunk_elements, log)


def _scaled(delta: torch.Tensor, ratio: float) -> torch.Tensor:
    """ratio * delta in place; x * 1.0 == x exactly, so the multiplication is skipped then."""
    return delta if ratio == 1.0 else delta.mul_(ratio)


def _merge(target_dir: Path, deltas: list[_Delta], ratios: list[float], out: Path, embeddings: str,
           dtype: str | None, max_shard_size: str, chunk_elements: int, log: Callable[[str], Any]) -> dict[str, Any]:
    start = time.perf_counter()
    if embeddings not in EMBEDDING_MODES:
        raise ChatVectorError(f"embeddings {embeddings!r}: choose from {', '.join(EMBEDDING_MODES)}")
    out_dtype = _dtype(dtype)
    max_shard_bytes = parse_size(max_shard_size)
    target = Weights(target_dir)
    tshapes = {n: i.shape for n, i in target.tensors.items()}
    emb = embedding_tensors(target_dir, tshapes) if embeddings != "all" else []
    for d in deltas:
        _check_against_target(target, d, set(emb))

    # Matched rows: per vector, target row -> base row of the same token string.
    maps: list[dict[str, torch.Tensor]] = [{} for _ in deltas]
    rows_report: list[dict[str, Any]] = [{} for _ in deltas]
    if embeddings == "matched":
        target_vocab = read_vocab(target_dir)
        if target_vocab is None:
            raise ChatVectorError(f"{target_dir}: no tokenizer, so --embedding-rows matched cannot match tokens")
        for k, d in enumerate(deltas):
            base_vocab = read_vocab(d.base_dir)
            if base_vocab is None:
                raise ChatVectorError(f"{d.base_dir}: no tokenizer, so --embedding-rows matched cannot match "
                                      "tokens of the base")
            for name in emb:
                m = row_map(target_vocab, base_vocab, tshapes[name][0], d.shapes[name][0])
                maps[k][name] = m
                matched = int((m >= 0).sum())
                rows_report[k][name] = {"rows": tshapes[name][0], "matched": matched,
                                        "target_only": tshapes[name][0] - matched}

    plan = []
    for name, info in target.tensors.items():
        floating = info.dtype.is_floating_point
        plan.append(_OutTensor(name, info.shape, out_dtype if (out_dtype and floating) else info.dtype))
    skipped = set(emb) if embeddings == "skip" else set()

    scratch = _Scratch()

    def blocks(t: _OutTensor) -> Iterator[torch.Tensor]:
        info = target.tensors[t.name]
        untouched = t.name in skipped or not info.dtype.is_floating_point
        for a, b in _row_blocks(t.shape, chunk_elements):
            shape = _block_shape(t.shape, a, b)
            if untouched:
                yield target.read_into(t.name, a, b, scratch.get("out", t.dtype, shape))
                continue
            acc = target.read_into(t.name, a, b, scratch.get("acc", torch.float32, shape))
            for d, r, m in zip(deltas, ratios, maps, strict=True):
                if t.name in m:
                    sel = m[t.name][a:b]
                    keep = (sel >= 0).nonzero().flatten()
                    if keep.numel():
                        acc.index_add_(0, keep, _scaled(d.gather(t.name, sel[keep]), r))
                else:
                    acc.add_(_scaled(d.rows(t.name, a, b, scratch.get("delta", torch.float32, shape)), r))
            yield acc if t.dtype == torch.float32 else scratch.get("out", t.dtype, shape).copy_(acc)

    with _atomic_dir(out) as tmp:
        shards, nbytes = _write_shards(tmp, plan, blocks, max_shard_bytes, _Progress("chat-vector", len(plan), log))
        _copy_side_files(target_dir, tmp, ("config.json", "generation_config.json", *TOKENIZER_FILES,
                                           *CHAT_TEMPLATE_FILES))
        if out_dtype is not None:
            config = _read_json(tmp / "config.json")
            config["torch_dtype"] = config["dtype"] = _hf_dtype_name(out_dtype)  # transformers 4 / 5
            _write_json(tmp / "config.json", config)
        chat = carry_chat_settings(tmp, target_dir, deltas[0].chat_dir)
        warnings = list(chat.pop("warnings"))
        if embeddings == "all":
            base_vocab, target_vocab = read_vocab(deltas[0].base_dir), read_vocab(target_dir)
            if base_vocab is not None and target_vocab is not None and base_vocab != target_vocab:
                warnings.append("the target's tokenizer differs from the base's but every embedding row got the "
                                "vector; --embedding-rows matched adds it by token string")
        seconds = time.perf_counter() - start
        bytes_read = sum(d.bytes_read for d in deltas) + target.bytes_read
        report = {
            "target": str(target_dir.resolve()),
            "vectors": [{"source": d.label, "ratio": r, **({"embedding_rows": rows} if rows else {})}
                        for d, r, rows in zip(deltas, ratios, rows_report, strict=True)],
            "embeddings": embeddings,
            "embedding_tensors": emb,
            "dtype": _hf_dtype_name(out_dtype) if out_dtype else "target's",
            "tensors": len(plan),
            "parameters": sum(math.prod(t.shape) for t in plan),
            "untouched": sorted(skipped | {t.name for t in plan if not target.tensors[t.name].dtype.is_floating_point}),
            "shards": shards,
            "bytes": nbytes,
            "bytes_read": bytes_read,
            "seconds": round(seconds, 2),
            "read_mb_per_s": round(bytes_read / 1e6 / max(seconds, 1e-9), 1),
            "chat": chat,
            "warnings": warnings,
        }
        _write_json(tmp / REPORT, report)
        mark_complete(tmp, PRODUCER_MERGE, {"tensors": len(plan), "shards": shards})
    for w in warnings:
        log(f"warning: {w}")
    mixed = " + ".join(f"{r:g} x ({d.label})" for d, r in zip(deltas, ratios, strict=True))
    log(f"{target_dir} + {mixed} -> {out}: {report['parameters']:,} parameters in {shards} shard(s), "
        f"embeddings {embeddings}, {seconds:.1f} s, {report['read_mb_per_s']:.0f} MB/s read")
    return report
