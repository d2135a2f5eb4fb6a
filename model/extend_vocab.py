"""Add Korean tokens to an existing model: its byte-level BPE and its embeddings (``koneox extend-vocab``).

    M (Hugging Face dir, byte-level BPE)  +  S (a koneox tokenizer, or any byte-level BPE)
      --tokenizer.extend--> M's merges, then merges for S's tokens that M lacks (Hangul-anchored ones
                            by default, so text without Hangul gets the same ids as before)
      --embedding surgery--> input embedding and LM head: old token rows copied bit for bit, a row per
                            new token, padding to a multiple of 128
      --> OUT: config.json, weights, tokenizer files, extend_vocab_report.json, _COMPLETE.json

Row layout of both matrices (V_old = M's tokenizer ids, N = new tokens, R = rows)::

    0 .. V_old-1          M's tokens: copied bit for bit
    V_old .. V_old+N-1    new tokens, initialised by ``init``
    V_old+N .. R-1        padding up to a multiple of ``pad_to_multiple``: no token

A new token's *pieces* are what M's own tokenizer makes of its bytes. ``init``:

    mean    input row = mean of the pieces' input rows; output row = mean of their output rows
    first   input row as ``mean``; output row = the first piece's output row (as EEVE does: the
            model's first prediction of the token's text is its first piece)
    random  both rows drawn from N(0, s^2), s the standard deviation of that matrix's old rows:
            the baseline

Padding rows (both matrices) are the mean of the old token rows: never produced by the tokenizer,
and in the LM head a padding row then gets the average logit in every context, where a zero row
would get 0, which may sit far above a trained model's logits. M's own padding rows (ids past its
tokenizer) are no token either, so the new tokens take their places and the ids stay contiguous
(``len(tokenizer)`` stays the vocabulary size); to train only the new rows, freeze the rows below
V_old (``train.freeze_embedding_rows_below``). The choice is recorded in config.json under
``koneox_vocab_extension``.

GPT-NeoX models (Pythia, Polyglot-Ko, koneox exports) are read and written with
``model.hf_io``: the whole model sits in memory once (2.6 GB for 1.3B in fp16). Other
architectures that ``transformers`` builds (Llama-style, tied embeddings too) are copied one
weight file at a time, with the input embedding and LM head found by asking ``transformers``
(``model.chat_vector.embedding_tensors``); a tied embedding is one matrix and takes the input
rule. The output directory is written under temporary names inside it and is complete only
when ``_COMPLETE.json`` appears, last.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from data.stage import mark_complete, start_work_dir, write_text_atomic
from tokenizer.extend import (
    BPE,
    PROBE_TEXTS,
    SCRIPTS,
    VocabExtensionError,
    changed_documents,
    check_reachable,
    decode_token,
    extend_bpe,
    load_tokenizer_json,
    old_pieces,
    ranked_candidates,
    strip_hangul,
    token_frequencies,
)
from tokenizer.fertility import fertility

INIT_MODES = ("mean", "first", "random")
PRODUCER = "koneox extend-vocab"
REPORT_NAME = "extend_vocab_report.json"
CONFIG_KEY = "koneox_vocab_extension"
"""config.json key recording the extension: init mode, old and new vocabulary sizes, source."""
EMBED_IN, EMBED_OUT = "gpt_neox.embed_in.weight", "embed_out.weight"
_WORK_PREFIX = ".koneox-extend-"
# files of M that the output replaces or must not carry over
_WEIGHT_FILE = re.compile(r"(model|pytorch_model)(-\d+-of-\d+)?\.(safetensors|bin)(\.index\.json)?$")
_NOT_COPIED = {"config.json", "tokenizer.json", "vocab.json", "merges.txt", REPORT_NAME, "_COMPLETE.json"}


# -- rows ----------------------------------------------------------------------------------------


@torch.no_grad()
def extend_rows(
    old: torch.Tensor,
    old_tokens: int,
    pieces: Sequence[Sequence[int]],
    rows: int,
    rule: str,
    generator: torch.Generator,
) -> torch.Tensor:
    """(rows, ...) from ``old`` (R_old, ...): rows < ``old_tokens`` copied, then one row per
    entry of ``pieces`` by ``rule`` ('mean', 'first' or 'random'), then padding (module docstring).
    Means are taken in fp32 (``old[ids].float().mean(0)``) and rounded once to the dtype."""
    if old.shape[0] < old_tokens:
        raise VocabExtensionError(f"the embedding has {old.shape[0]} rows, fewer than the tokenizer's "
                                  f"{old_tokens} ids")
    n_new = len(pieces)
    out = torch.empty((rows, *old.shape[1:]), dtype=old.dtype)
    out[:old_tokens] = old[:old_tokens]
    kept = old[:old_tokens].float()
    if rule == "random":
        std = kept.std().item()
        out[old_tokens : old_tokens + n_new] = (
            torch.randn((n_new, *old.shape[1:]), generator=generator) * std).to(old.dtype)
    else:
        for k, ids in enumerate(pieces):
            index = torch.tensor(list(ids) if rule == "mean" else [ids[0]])
            out[old_tokens + k] = old[index].float().mean(0).to(old.dtype)
    out[old_tokens + n_new :] = kept.mean(0).to(old.dtype)
    return out


def recorded_extension(model_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The ``koneox_vocab_extension`` record in ``model_dir``'s config.json (written by
    ``extend_vocab`` and carried on by ``koneox export``), or None."""
    cfg = Path(model_dir) / "config.json"
    if not cfg.is_file():
        return None
    record = json.loads(cfg.read_text(encoding="utf-8")).get(CONFIG_KEY)
    return record if isinstance(record, dict) else None


def _padded(n: int, multiple: int) -> int:
    return math.ceil(n / multiple) * multiple


# -- weights -------------------------------------------------------------------------------------


def _resize_gpt_neox(model_dir: Path, stage: Path, resize: Any) -> dict[str, Any]:
    from model.gpt_neox import GPTNeoX
    from model.hf_io import load_config, open_weights, save_pretrained

    cfg = load_config(model_dir)
    with torch.device("meta"):
        names = [n for n, _ in GPTNeoX(cfg).named_parameters()]
    loaded = {name: full if isinstance(full, torch.Tensor) else full[:] for name, full in open_weights(model_dir, names)}
    state = {n: loaded.pop(n) for n in names}
    state[EMBED_IN] = resize(state[EMBED_IN], "input")
    state[EMBED_OUT] = resize(state[EMBED_OUT], "output")
    rows = state[EMBED_IN].shape[0]
    save_pretrained(state, replace(cfg, vocab_size=rows, pad_vocab_multiple=1), stage)  # config.json: M's, below
    return {"architecture": "gpt_neox", "input": EMBED_IN, "output": EMBED_OUT, "tied": False}


def _resize_generic(model_dir: Path, stage: Path, resize: Any) -> dict[str, Any]:
    """Any architecture ``transformers`` builds: weight files copied one at a time, the embedding
    tensors resized on the way."""
    from safetensors.torch import save_file

    from model.chat_vector import ChatVectorError, Weights, embedding_tensors

    try:
        weights = Weights(model_dir)
        found = embedding_tensors(model_dir, {n: i.shape for n, i in weights.tensors.items()})
    except ChatVectorError as e:
        raise VocabExtensionError(str(e)) from None
    matrices = [n for n in found if len(weights.tensors[n].shape) == 2]
    biases = [n for n in found if len(weights.tensors[n].shape) == 1]
    roles = {matrices[0]: "input"}
    if len(matrices) > 1:
        roles[matrices[1]] = "output"
    roles.update({n: "output" for n in biases})
    files: dict[Path, list[str]] = {}
    for name, info in weights.tensors.items():
        files.setdefault(info.file, []).append(name)
    weight_map, total = {}, 0
    for k, (_, names) in enumerate(sorted(files.items())):
        shard_name = "model.safetensors" if len(files) == 1 else f"model-{k + 1:05d}-of-{len(files):05d}.safetensors"
        shard = {}
        for name in names:
            info = weights.tensors[name]
            t = weights.read_into(name, 0, info.shape[0] if info.shape else 0, torch.empty(info.shape, dtype=info.dtype))
            if name in roles:
                t = resize(t if t.dim() == 2 else t.unsqueeze(1), roles[name])
                t = t if len(info.shape) == 2 else t.squeeze(1)
            shard[name] = t.contiguous()
            weight_map[name] = shard_name
            total += t.numel() * t.element_size()
        save_file(shard, str(stage / shard_name), metadata={"format": "pt"})
        del shard
    if len(files) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (stage / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    cfg = weights.config()
    return {"architecture": cfg.get("model_type"), "input": matrices[0],
            "output": matrices[1] if len(matrices) > 1 else matrices[0], "tied": len(matrices) == 1}


# -- inputs --------------------------------------------------------------------------------------


def _read_docs(paths: Sequence[str | os.PathLike], limit_bytes: int | None) -> list[str]:
    from tokenizer.reader import iter_documents

    docs, size = [], 0
    for text in iter_documents(paths):
        if limit_bytes and size >= limit_bytes:
            break
        docs.append(text)
        size += len(text.encode("utf-8"))
    return docs


def _domains(paths: Sequence[str | os.PathLike]) -> dict[str, str]:
    """A report name per path: the file name without its input suffixes, made unique."""
    names: dict[str, str] = {}
    for path in paths:
        name = Path(path).name
        for suffix in (".gz", ".jsonl", ".parquet", ".txt"):
            name = name.removesuffix(suffix)
        unique, k = name or str(path), 2
        while unique in names:
            unique, k = f"{name}-{k}", k + 1
        names[unique] = str(path)
    return names


def _bpb(model_dir: Path, domains: dict[str, str], limit_bytes: int | None, device: str) -> dict[str, float]:
    from train.eval.bpb import bits_per_byte
    from train.eval.fast_load import load

    model, tok, _ = load(model_dir, device=device, dtype="fp32")
    return {name: round(bits_per_byte(model, tok, path, limit_bytes=limit_bytes, progress=False)["bits_per_byte"], 6)
            for name, path in domains.items()}


# -- the stage -----------------------------------------------------------------------------------


def extend_vocab(
    model_dir: str | os.PathLike,
    add_tokens: str | os.PathLike,
    out_dir: str | os.PathLike,
    num_new: int | None = None,
    corpus: Sequence[str | os.PathLike] = (),
    min_frequency: int = 1,
    corpus_bytes: int | None = 100_000_000,
    script: str = "hangul",
    init: str = "mean",
    pad_to_multiple: int = 128,
    english_check: Sequence[str | os.PathLike] = (),
    eval_text: Sequence[str | os.PathLike] = (),
    eval_bytes: int | None = 2_000_000,
    bpb: bool = False,
    device: str = "cpu",
    seed: int = 1234,
) -> dict[str, Any]:
    """Extend ``model_dir``'s tokenizer with the tokens of ``add_tokens`` and resize its embeddings;
    write the result to ``out_dir`` and return the report (also ``out_dir/extend_vocab_report.json``).

    ``corpus``: rank the candidates by how often ``add_tokens`` uses them on these documents (the
    first ``corpus_bytes``), keeping those seen ``min_frequency`` times; else by its merge rank.
    ``english_check``: documents without Hangul whose ids must not change (default: built-in probe
    texts, and the corpus documents with their Hangul removed). ``eval_text``: fertility before and
    after on these documents (the first ``eval_bytes`` of each); with ``bpb`` also the bits per byte
    of the model before and after (train.eval.bpb), on ``device``."""
    start = time.perf_counter()
    model_dir, out = Path(model_dir), Path(out_dir)
    if init not in INIT_MODES:
        raise VocabExtensionError(f"init {init!r}: choose from {', '.join(INIT_MODES)}")
    if script not in SCRIPTS:
        raise VocabExtensionError(f"script {script!r}: choose from {', '.join(SCRIPTS)}")
    if pad_to_multiple < 1:
        raise VocabExtensionError(f"pad_to_multiple {pad_to_multiple}: must be >= 1")
    if not (model_dir / "config.json").is_file():
        raise VocabExtensionError(f"{model_dir}: no config.json (expected a Hugging Face model directory)")
    for p in (model_dir, Path(add_tokens)):
        if out.resolve() == p.resolve():
            raise VocabExtensionError(f"{out}: the output is one of the inputs; write to a new directory")
    base_json = load_tokenizer_json(model_dir)
    source_json = load_tokenizer_json(add_tokens)
    base = BPE.of(base_json, f"{model_dir} (tokenizer)")
    source = BPE.of(source_json, f"{add_tokens}")

    corpus_docs = _read_docs(corpus, corpus_bytes) if corpus else []
    frequencies: Counter[str] | None = token_frequencies(source_json, corpus_docs) if corpus else None
    order, counts = ranked_candidates(base, source, script, frequencies, min_frequency)
    ext = extend_bpe(base_json, source_json, order, script, num_new)
    reach = check_reachable(ext)
    old_tok, new_tok = _tokenizer(base_json), ext.tokenizer()

    if english_check:
        check_docs, check_source = _read_docs(english_check, eval_bytes), [str(p) for p in english_check]
    else:
        check_docs = list(PROBE_TEXTS) + [t for d in corpus_docs[:2000] if (t := strip_hangul(d)).strip()]
        check_source = ["probe texts"] + (["corpus with its Hangul removed"] if corpus_docs else [])
    english = {"source": check_source, **changed_documents(old_tok, new_tok, check_docs)}

    rows = _padded(ext.vocab_size, pad_to_multiple)
    pieces = old_pieces(base_json, ext.added)
    generator = torch.Generator().manual_seed(seed)
    rules = {"input": "random" if init == "random" else "mean",
             "output": {"mean": "mean", "first": "first", "random": "random"}[init]}

    def resize(t: torch.Tensor, role: str) -> torch.Tensor:
        return extend_rows(t, ext.first_id, pieces, rows, rules[role], generator)

    work = start_work_dir(out, _WORK_PREFIX)
    try:
        with open(model_dir / "config.json", encoding="utf-8") as f:
            hf_config = json.load(f)
        if "vocab_size" not in hf_config:
            raise VocabExtensionError(f"{model_dir / 'config.json'}: no vocab_size to update")
        old_rows = int(hf_config["vocab_size"])
        if hf_config.get("model_type") == "gpt_neox":
            layout = _resize_gpt_neox(model_dir, work, resize)
        else:
            layout = _resize_generic(model_dir, work, resize)
        record = {
            "init": init,
            "input_rows": rules["input"] if not layout["tied"] else rules["input"] + " (tied: one matrix)",
            "output_rows": rules["output"] if not layout["tied"] else rules["input"] + " (tied: one matrix)",
            "padding_rows": "mean of the old token rows",
            "old_vocab_size": ext.first_id,
            "old_rows": old_rows,
            "new_tokens": len(ext.added),
            "vocab_size": ext.vocab_size,
            "rows": rows,
            "source_tokenizer": str(add_tokens),
            "script": script,
        }
        hf_config = {**hf_config, "vocab_size": rows, CONFIG_KEY: record}
        (work / "config.json").write_text(json.dumps(hf_config, indent=2, ensure_ascii=False) + "\n")
        (work / "tokenizer.json").write_text(json.dumps(ext.tokenizer_json, ensure_ascii=False), encoding="utf-8")
        for p in sorted(model_dir.iterdir()):
            if p.is_file() and p.name not in _NOT_COPIED and not _WEIGHT_FILE.match(p.name):
                shutil.copy2(p, work / p.name)
        files = sorted(p.name for p in work.iterdir())
        for p in out.iterdir():  # weights of an earlier run into this directory, sharded otherwise
            if p.is_file() and _WEIGHT_FILE.match(p.name) and p.name not in files:
                p.unlink()
        for name in files:  # each rename is atomic; the marker says they are all there
            os.replace(work / name, out / name)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    source_tok = _tokenizer(source_json)
    fert: dict[str, Any] = {}
    bpb_scores: dict[str, Any] = {}
    domains = _domains(eval_text)
    for name, path in domains.items():
        docs = _read_docs([path], eval_bytes)
        fert[name] = {"before": fertility(old_tok, docs), "after": fertility(new_tok, docs),
                      "source_tokenizer": fertility(source_tok, docs)}
    if bpb and domains:
        before, after = _bpb(model_dir, domains, eval_bytes, device), _bpb(out, domains, eval_bytes, device)
        bpb_scores = {name: {"before": before[name], "after": after[name]} for name in domains}

    report: dict[str, Any] = {
        "model": str(model_dir),
        "add_tokens": str(add_tokens),
        "script": script,
        "ranking": "frequency" if corpus else "merge_rank",
        "corpus": [str(p) for p in corpus],
        "corpus_documents": len(corpus_docs),
        "min_frequency": min_frequency if corpus else None,
        "num_new": num_new,
        "tokens": {
            **counts,
            "added": len(ext.added),
            "added_from_source": ext.from_source,
            "added_as_inner_parts": len(ext.added) - ext.from_source,
            "unreachable": len(ext.unreachable),
            "unreachable_examples": [decode_token(t) for t in ext.unreachable[:20]],
            "capped_by_num_new": ext.capped,
            "first_new_id": ext.first_id,
            "vocab_size": ext.vocab_size,
            "rows": rows,
            "old_rows": old_rows,
        },
        "reachable": reach,
        "unchanged_text_check": english,
        "init": record,
        "layout": layout,
        "fertility": fert,
        "bits_per_byte": bpb_scores,
        "seconds": round(time.perf_counter() - start, 2),
    }
    write_text_atomic(out / REPORT_NAME, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    mark_complete(out, PRODUCER, {"files": [*files, REPORT_NAME], "vocab_size": ext.vocab_size, "rows": rows,
                                  "new_tokens": len(ext.added), "init": init})
    return report


def _tokenizer(data: dict[str, Any]) -> Any:
    from tokenizers import Tokenizer

    return Tokenizer.from_str(json.dumps(data))


def format_report(report: dict[str, Any]) -> str:
    """Human-readable summary of an extension report."""
    t, r, e = report["tokens"], report["reachable"], report["unchanged_text_check"]
    lines = [
        f"candidates: {t['candidates']} of {t['absent_from_model']} source tokens the model lacks "
        f"({t['left_out_by_script']} left out by --script {report['script']}; ranked by {report['ranking']})",
        f"added: {t['added']} tokens ({t['added_from_source']} from the source, {t['added_as_inner_parts']} inner "
        f"parts), ids {t['first_new_id']}..{t['vocab_size'] - 1}; rows {t['old_rows']} -> {t['rows']}"
        + ("; stopped by --num-new" if t["capped_by_num_new"] else ""),
        f"reachable: {r['reachable']} of {r['added']} encode alone as themselves; unreachable candidates left out: "
        f"{t['unreachable']} {t['unreachable_examples'][:5]}",
        f"text without Hangul: {e['changed']} of {e['documents']} documents changed ids ({', '.join(e['source'])})",
        f"init: {report['init']['init']} (input rows {report['init']['input_rows']}, output rows "
        f"{report['init']['output_rows']}); train only the new rows with "
        f"train.freeze_embedding_rows_below={t['first_new_id']} (or auto)",
    ]
    for name, f in report["fertility"].items():
        b, a, s = f["before"], f["after"], f["source_tokenizer"]
        lines.append(f"{name:>16}: bytes/token {b['bytes_per_token']:.3f} -> {a['bytes_per_token']:.3f} "
                     f"(source {s['bytes_per_token']:.3f}); tokens/word {b['tokens_per_word']:.3f} -> "
                     f"{a['tokens_per_word']:.3f}")
    for name, s in report["bits_per_byte"].items():
        lines.append(f"{name:>16}: bits per byte {s['before']:.4f} -> {s['after']:.4f}")
    return "\n".join(lines)
