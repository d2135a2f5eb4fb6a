"""Log-likelihood of continuations: tokenization as the harness does it, batched scoring.

Tokenization (lm-evaluation-harness 0.4.13, ``TemplateLM._encode_pair`` and
``HFLM.tok_encode``): trailing whitespace of the context moves to the front of the
continuation; then ``whole = encode(context + continuation)``, ``ctx = encode(context)`` and
the continuation's tokens are ``whole[len(ctx):]``. ``encode`` is the tokenizer's own
default (special tokens as the tokenizer adds them: none for GPT-NeoX tokenizers), except
that a string already starting with the BOS/EOS text gets none. An empty context is replaced
by the prefix token (BOS, else EOS).

Scoring (``HFLM._loglikelihood_tokens``): the model sees ``(ctx + cont)[-(L + 1):][:-1]``
(L = the model window; longer inputs lose tokens on the left) and the continuation's score is
the sum of the log-probabilities of its tokens. Here:

    requests --dedupe--> rows (one per distinct model input; requests whose input is the
                         same, e.g. one-token choices after one context, share a row)
    rows --sort--> longest first (ties: by tokens), batches of rows padded on the right
    batch --model--> logits of the positions that predict continuation tokens only
                     (``logits_to_keep`` where the model takes it), log-softmax in fp32 (fp64
                     for an fp64 model; the harness uses the logits' dtype),
                     gather, per-request sums with index_add (no Python loop over tokens)

Right padding needs no attention mask: a causal model's outputs at real positions never see
the padding after them. ``batch_size="auto"`` sizes batches by a token budget (rows x padded
length; AUTO_TOKENS, AUTO_ROWS) and halves the budget and the rows whenever a batch runs out of
memory, then goes on with the smaller size.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from train.eval.templates import EvalError

DEFAULT_MAX_LENGTH = 2048
_TOKENIZER_INFINITY = 10**29  # transformers' "no limit" model_max_length is about 1e30

# "auto": starting token budget per batch (rows x padded length) and most rows per batch
AUTO_TOKENS = {"cuda": 1 << 16, "cpu": 1 << 13}
AUTO_ROWS = {"cuda": 1024, "cpu": 64}


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def resolve_max_length(model: Any, tokenizer: Any = None) -> int:
    """The model window, found as the harness finds it: n_positions, max_position_embeddings or
    n_ctx of the (text) config, then the tokenizer's model_max_length, then 2048."""
    config = getattr(model, "config", None)
    cfg = getattr(config, "text_config", None) or config
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(cfg, attr, None)
        if value is not None:
            return int(value)
    limit = getattr(tokenizer, "model_max_length", None)
    if limit is not None and limit < _TOKENIZER_INFINITY:
        return int(limit)
    return DEFAULT_MAX_LENGTH


def prefix_token_id(tokenizer: Any) -> int:
    """BOS, else EOS: what an empty context (or a document's first token) is conditioned on."""
    tid = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if tid is None:
        raise EvalError("the tokenizer has neither a BOS nor an EOS token to condition on")
    return int(tid)


def _encode(tokenizer: Any, strings: Sequence[str]) -> list[list[int]]:
    """``tokenizer.encode`` of each string with its default special tokens, except none for a
    string that starts with the prefix token's text (batched: one call per kind)."""
    bos_text = tokenizer.decode(prefix_token_id(tokenizer))
    out: list[list[int] | None] = [None] * len(strings)
    for plain in (False, True):
        idx = [i for i, s in enumerate(strings) if s.startswith(bos_text) == plain]
        if idx:
            kwargs = {"add_special_tokens": False} if plain else {}
            ids = tokenizer([strings[i] for i in idx], **kwargs)["input_ids"]
            for i, t in zip(idx, ids, strict=True):
                out[i] = list(t)
    return out  # type: ignore[return-value]


def encode_pairs(tokenizer: Any, pairs: Sequence[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
    """(context tokens, continuation tokens) per (context, continuation) string pair."""
    prefix = prefix_token_id(tokenizer)
    moved = []
    for ctx, cont in pairs:
        n = len(ctx) - len(ctx.rstrip())
        moved.append((ctx[: len(ctx) - n], ctx[len(ctx) - n :] + cont) if n else (ctx, cont))
    contexts = sorted({c for c, _ in moved if c})
    ctx_ids = dict(zip(contexts, _encode(tokenizer, contexts), strict=True))
    whole_ids = _encode(tokenizer, [c + x for c, x in moved if c])
    empty = [x for c, x in moved if not c]
    empty_ids = tokenizer(empty, add_special_tokens=False)["input_ids"] if empty else []
    out = []
    w = e = 0
    for (ctx, cont), (c, _) in zip(pairs, moved, strict=True):
        if c:
            cids = ctx_ids[c]
            pair = (cids, whole_ids[w][len(cids) :])
            w += 1
        else:
            ids = list(empty_ids[e])
            e += 1
            pair = ([prefix], ids) if ids and ids[0] != prefix else (ids[:1], ids[1:])
        if not pair[1]:
            raise EvalError(f"continuation {cont!r} after context ...{ctx[-40:]!r} has no tokens of its own")
        out.append(pair)
    return out


def _takes(model: torch.nn.Module, name: str) -> bool:
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


@torch.no_grad()
def loglikelihoods(
    model: torch.nn.Module,
    requests: Sequence[tuple[Sequence[int], Sequence[int]]],
    max_length: int,
    batch_size: int | str = "auto",
    progress: bool = True,
    desc: str = "scoring",
) -> np.ndarray:
    """Summed log-probability (nats, float64) of each request's continuation tokens."""
    from tqdm.auto import tqdm

    L = int(max_length)
    rows: dict[tuple[int, ...], int] = {}
    req_row = np.empty(len(requests), dtype=np.int64)
    req_len = np.empty(len(requests), dtype=np.int64)
    req_tok: list[Sequence[int]] = []
    for i, (ctx, cont) in enumerate(requests):
        if not ctx or not cont:
            raise EvalError(f"request {i}: the context and the continuation need at least one token each")
        if len(cont) > L:
            raise EvalError(f"request {i}: continuation of {len(cont)} tokens is longer than the model window {L}")
        inp = tuple((list(ctx) + list(cont))[-(L + 1) :][:-1])
        req_row[i] = rows.setdefault(inp, len(rows))
        req_len[i] = len(cont)
        req_tok.append(cont)
    inputs = list(rows)
    order = sorted(range(len(inputs)), key=lambda r: (-len(inputs[r]), inputs[r]))
    by_row: list[list[int]] = [[] for _ in inputs]
    for i, r in enumerate(req_row):
        by_row[r].append(i)

    device = model_device(model)
    kind = "cuda" if device.type == "cuda" else "cpu"
    auto = batch_size == "auto"
    if not auto and (not isinstance(batch_size, int) or batch_size < 1):
        raise EvalError(f"batch size {batch_size!r}: a positive integer or 'auto'")
    budget, max_rows = AUTO_TOKENS[kind], AUTO_ROWS[kind]
    keep_arg = _takes(model, "logits_to_keep")
    cache_arg = _takes(model, "use_cache")

    out = np.zeros(len(requests), dtype=np.float64)
    bar = tqdm(total=len(requests), desc=desc, disable=not progress, unit="req")
    pos = 0
    while pos < len(order):
        T = len(inputs[order[pos]])
        n = max(1, min(max_rows, budget // T)) if auto else batch_size
        batch = order[pos : pos + n]
        try:
            sums, reqs = _score_batch(model, inputs, batch, by_row, req_len, req_tok, device, keep_arg, cache_arg)
        except RuntimeError as e:
            if not _is_oom(e):
                raise
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if not auto:
                raise EvalError(f"out of memory with batch size {batch_size}; use a smaller --batch-size "
                                "or 'auto'") from None
            if n == 1:
                raise EvalError(f"out of memory scoring a single input of {T} tokens") from None
            budget = max(T, budget // 2)
            max_rows = max(1, min(max_rows, n // 2))
            continue
        out[reqs] = sums
        pos += len(batch)
        bar.update(len(reqs))
    bar.close()
    return out


def _score_batch(model: torch.nn.Module, inputs: list[tuple[int, ...]], batch: list[int],
                 by_row: list[list[int]], req_len: np.ndarray, req_tok: list[Sequence[int]],
                 device: torch.device, keep_arg: bool, cache_arg: bool) -> tuple[np.ndarray, np.ndarray]:
    B, T = len(batch), len(inputs[batch[0]])
    ids = np.zeros((B, T), dtype=np.int64)  # right padding with token 0, as the harness pads
    lens = np.empty(B, dtype=np.int64)
    reqs, local_row = [], []
    for b, r in enumerate(batch):
        row = inputs[r]
        ids[b, : len(row)] = row
        lens[b] = len(row)
        reqs += by_row[r]
        local_row += [b] * len(by_row[r])
    reqs_a = np.asarray(reqs, dtype=np.int64)
    local = np.asarray(local_row, dtype=np.int64)
    n_cont = req_len[reqs_a]
    start = lens[local] - n_cont  # first position whose logits predict the continuation
    # One entry per continuation token: its request (in this batch), row, position, target.
    tok_req = np.repeat(np.arange(len(reqs_a)), n_cont)
    offsets = np.arange(int(n_cont.sum())) - np.repeat(np.cumsum(n_cont) - n_cont, n_cont)
    tok_pos = np.repeat(start, n_cont) + offsets
    tok_row = local[tok_req]
    targets = np.concatenate([np.asarray(req_tok[i], dtype=np.int64) for i in reqs_a])

    keep = T - int(start.min())  # logits of the last `keep` positions hold every scored one
    kwargs: dict[str, Any] = {}
    if keep_arg:
        kwargs["logits_to_keep"] = keep
    if cache_arg:
        kwargs["use_cache"] = False
    x = torch.from_numpy(ids).to(device)
    logits = model(input_ids=x, **kwargs).logits  # (B, keep or T, V)
    shift = T - logits.shape[1]
    sel = logits[torch.from_numpy(tok_row).to(device), torch.from_numpy(tok_pos - shift).to(device)]  # (N, V)
    logp = F.log_softmax(sel if sel.dtype == torch.float64 else sel.float(), dim=-1)  # fp32 at least
    tok_lp = logp.gather(1, torch.from_numpy(targets).to(device)[:, None]).squeeze(1)  # (N,)
    sums = torch.zeros(len(reqs_a), dtype=torch.float64, device=device)
    sums.index_add_(0, torch.from_numpy(tok_req).to(device), tok_lp.double())
    return sums.cpu().numpy(), reqs_a
