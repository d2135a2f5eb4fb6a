"""Pick a checkpoint of a run: held-out loss, degeneration, epochs, KoBEST (``koneox select RUN``).

Polyglot-Ko's 1.3B and 3.8B runs degenerated near the 1-epoch boundary (greedy generation
repeated one token) and checkpoints from before the boundary were picked by hand
(REFERENCE §1). This automates that choice::

    koneox select runs/demo/train                    # every checkpoint
    koneox select runs/demo/train --every 5 --prompts prompts.txt
    koneox select runs/demo/train --kobest --kobest-limit 200 --rank-by kobest

For every (or every K-th, plus the last) checkpoint of the run:

    validation   mean next-token loss and perplexity on the run's validation split (documents
                 never trained on: data/dataset.py splits by document), the same samples for
                 every checkpoint; rep/128 teacher-forced on the same text
    bits/byte    the validation loss in bits over the UTF-8 bytes of the scored tokens decoded
                 with the run's tokenizer (token_bytes): every target counts in the numerator,
                 EOS included (predicting where a document ends costs bits), and special
                 tokens add no bytes. The samples are the same for every checkpoint, so within
                 a run bpb is val_loss x a constant and ranks alike; its use is comparing runs
                 whose tokenizers differ.
    generation   a 100-token greedy continuation of each prompt (default: 50-token prefixes
                 of validation documents): seq-rep-1, seq-rep-4, longest run of one token,
                 distinct-2 (train/eval/degeneration.py)
    epoch        fractional epoch of the training data when the checkpoint was saved
                 (koneox_meta.json); boundaries are read from RUN/metrics.jsonl
    KoBEST       (``--kobest``) acc and macro F1 of each task (train.eval.kobest.evaluate on the
                 model already in memory, the model an export of the checkpoint gives) and the
                 mean macro F1 over the tasks (and shot counts)

A checkpoint is flagged **degenerate** when its repetition is far above the best (lowest) of
the checkpoints evaluated before it, for either measure:

    seq-rep-4          > rep_ratio (1.5) x best earlier  and  >= rep_margin (0.1) above it
    mean longest run   > run_ratio (2.0) x best earlier  and  >= run_margin (10 tokens) above it

Both conditions are needed: the ratio alone fires on tiny values (0.01 -> 0.03), the margin
alone on early checkpoints whose repetition is still falling. The first checkpoint evaluated
has nothing to compare with and is never flagged.

The recommendation is the non-degenerate checkpoint with the lowest validation loss (``rank_by``
"val_loss"), the lowest bits per byte ("bpb") or the highest mean KoBEST macro F1 ("kobest");
on a tie, the earliest.

Outputs (``--out``, default the run directory): ``selection.json`` (everything),
``selection.md`` (a table) and ``selection.png`` (training loss with epoch boundaries,
validation loss and bits per byte, mean KoBEST F1 when evaluated, and seq-rep-4 per checkpoint).
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from train.eval.degeneration import rep_l_hits, summarize
from train.export import Checkpoint, ExportError, hf_model, inference_dtype, list_checkpoints, open_checkpoint

DEFAULT_KOBEST_DATA = Path(__file__).resolve().parents[2] / "data" / "samples" / "kobest"
"""The bundled KoBEST dev splits (data/samples/kobest/README.md)."""

# rank_by -> (row key, True when higher is better)
RANK_KEYS = {"val_loss": ("val_loss", False), "bpb": ("bpb", False), "kobest": ("kobest_f1", True)}


@dataclass
class Thresholds:
    """When a checkpoint's repetition counts as far above the best earlier checkpoint's."""

    rep_ratio: float = 1.5
    """seq-rep-4 above this multiple of the best earlier seq-rep-4 ..."""
    rep_margin: float = 0.1
    """... and at least this much higher in absolute terms."""
    run_ratio: float = 2.0
    """Mean longest run of one token above this multiple of the best earlier ..."""
    run_margin: float = 10.0
    """... and at least this many tokens longer."""


@dataclass
class KoBEST:
    """KoBEST evaluation of every selected checkpoint (train/eval/kobest.py)."""

    tasks: str = "kobest"
    """Comma-separated task names, or "kobest" for all five."""
    shots: tuple[int, ...] = (0,)
    """Few-shot counts; above 0 the train split must be in ``data_dir`` too (not bundled)."""
    data_dir: str = str(DEFAULT_KOBEST_DATA)
    """DIR/<task>/<split>.tsv|jsonl|parquet (train/eval/kobest_data.py)."""
    split: str = "dev"
    limit: int | None = None
    """The first N examples of each task; None = all."""


@dataclass
class Settings:
    prompts_file: str | None = None
    """Text file, one prompt per line (or .jsonl with a "text" field); None = held-out prefixes."""
    num_prompts: int = 32
    """Prompts taken from the validation documents when no file is given."""
    prefix_tokens: int = 50
    """Tokens of each held-out document used as the prompt."""
    new_tokens: int = 100
    """Greedy continuation length (no stop at EOS)."""
    val_samples: int = 64
    """Validation samples (seq_len + 1 tokens each) for the loss and rep/l."""
    rep_window: int = 128
    """l of rep/l."""
    batch_size: int = 8
    """Sequences per forward pass."""
    every: int = 1
    """Evaluate every K-th checkpoint (the last one always)."""
    device: str = "cpu"
    """torch device for evaluation."""
    dtype: str | None = None
    """Weights dtype: None = the training precision on a GPU (a 12.8B model does not fit a 40 GB
    A100 in fp32), fp32 on a CPU."""
    thresholds: Thresholds = field(default_factory=Thresholds)
    kobest: KoBEST | None = None
    """KoBEST evaluation per checkpoint; None = none."""
    rank_by: str = "val_loss"
    """What the recommendation minimises or maximises: "val_loss", "bpb" or "kobest" (mean macro F1)."""


# -- data -------------------------------------------------------------------------------------


def _data_config(c: Checkpoint) -> Any:
    from data.config import DataConfig
    from data.config_loader import build

    # The resolved config stored in the checkpoint, rebuilt with the project's own typed loader
    # (validation included); token ids were verified when the run trained.
    data = build(DataConfig, c.meta["config"]["data"], "data.", str(c.path / "koneox_meta.json"), {})
    data.verify_token_ids = False
    return data


def held_out(c: Checkpoint, settings: Settings) -> tuple[np.ndarray, list[list[int]], str]:
    """(validation samples (N, seq_len + 1), prompt token lists, where the prompts came from)."""
    from data.dataset import build_datasets

    sets = build_datasets(_data_config(c), vocab_size=c.model_config.padded_vocab_size)
    valid = sets.get("valid")
    if valid is None:
        raise ExportError(f"{c.path}: the run has no validation split (data.split gives it no documents "
                          "with seq_len + 1 tokens); selection needs held-out data")
    # Never more than one pass over any component: every sample is a different piece of text.
    limit = min(int(s / w) for s, w in zip(valid.samples_per_epoch, valid.weights, strict=True))
    n = max(1, min(settings.val_samples, limit))
    tokens, _, _ = valid.get_batch(0, n)

    P = settings.prefix_tokens
    prompts: list[list[int]] = []
    rng = np.random.default_rng(0)
    for ds in valid.datasets:
        for d in rng.permutation(ds.documents):
            doc = ds.indexed.document(int(d))
            if len(doc) > P:
                prompts.append(doc[:P].astype(np.int64).tolist())
            if len(prompts) >= settings.num_prompts:
                break
    source = f"first {P} tokens of {len(prompts)} validation documents"
    if len(prompts) < settings.num_prompts:
        # Short documents (reviews, comments): fill with windows of the validation token
        # stream, documents joined by EOS exactly as the model saw text in training.
        k = settings.num_prompts - len(prompts)
        stream = valid.get_batch(0, min(k, limit))[0]
        extra = [row[:P].tolist() for row in stream if len(row) >= P]
        prompts += extra
        source += f" and {len(extra)} {P}-token windows of the validation stream (too few documents of {P + 1}+ tokens)"
    return tokens, prompts, source


def file_prompts(path: str, tokenizer: Any) -> list[list[int]]:
    p = Path(path)
    lines = [ln for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if p.suffix == ".jsonl":
        lines = [json.loads(ln)["text"] for ln in lines]
    if not lines:
        raise ExportError(f"{p}: no prompts")
    return [tokenizer(text, add_special_tokens=False)["input_ids"] for text in lines]


def token_bytes(tokenizer: Any, size: int) -> np.ndarray:
    """(size,) int64: the UTF-8 bytes each token id adds to decoded text; special tokens (EOS,
    BOS, padding) and ids beyond the tokenizer add 0.

    Byte-level BPE (every koneox tokenizer, GPT-NeoX's): one character of a vocabulary string is
    one byte, so a token holding part of a Korean syllable counts the bytes it holds and the sum
    over a token sequence is exactly the byte length of its decoded text (decoding a sequence cut
    inside a character would instead give a 3-byte U+FFFD). Other tokenizers: the bytes of the
    token decoded alone."""
    from tokenizers import pre_tokenizers

    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    byte_level = (backend.get("decoder") or {}).get("type") == "ByteLevel"
    alphabet = set(pre_tokenizers.ByteLevel.alphabet())
    added = tokenizer.added_tokens_decoder  # id -> AddedToken: stored as text, not as byte symbols
    special = set(tokenizer.all_special_ids) | {i for i, t in added.items() if t.special}
    table = np.zeros(size, dtype=np.int64)
    for piece, i in tokenizer.get_vocab().items():
        if i >= size or i in special:
            continue
        if i in added:
            table[i] = len(added[i].content.encode("utf-8"))
        elif byte_level and set(piece) <= alphabet:
            table[i] = len(piece)
        else:
            table[i] = len(tokenizer.decode([i], clean_up_tokenization_spaces=False).encode("utf-8"))
    return table


# -- model ------------------------------------------------------------------------------------


@torch.no_grad()
def validation(model: torch.nn.Module, tokens: np.ndarray, settings: Settings) -> dict[str, float]:
    """Mean token loss, perplexity and rep/l over the validation samples."""
    total_loss, count, hits, positions = 0.0, 0, 0, 0
    for i in range(0, len(tokens), settings.batch_size):
        batch = torch.from_numpy(tokens[i : i + settings.batch_size]).to(settings.device)
        inputs, targets = batch[:, :-1], batch[:, 1:]
        logits = model(input_ids=inputs).logits.float()  # (B, T, V)
        total_loss += F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum").item()
        count += targets.numel()
        h, n = rep_l_hits(inputs.cpu(), logits.argmax(-1).cpu(), settings.rep_window)
        hits, positions = hits + h, positions + n
    loss = total_loss / count
    return {"val_loss": loss, "val_ppl": math.exp(min(loss, 50.0)), f"rep_{settings.rep_window}": hits / positions}


@torch.no_grad()
def greedy(model: torch.nn.Module, prompts: list[list[int]], settings: Settings) -> list[list[int]]:
    """Fixed-length greedy continuations; prompts of equal length share a batch (no padding)."""
    out: dict[int, list[int]] = {}
    by_len: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        by_len.setdefault(len(p), []).append(i)
    for idx in by_len.values():
        for j in range(0, len(idx), settings.batch_size):
            rows = idx[j : j + settings.batch_size]
            ids = torch.tensor([prompts[r] for r in rows], device=settings.device)  # (B, P)
            res = model(input_ids=ids, use_cache=True)
            nxt = res.logits[:, -1].argmax(-1)  # (B,)
            steps = [nxt]
            for _ in range(settings.new_tokens - 1):
                res = model(input_ids=nxt[:, None], past_key_values=res.past_key_values, use_cache=True)
                nxt = res.logits[:, -1].argmax(-1)
                steps.append(nxt)
            gen = torch.stack(steps, dim=1).tolist()  # (B, new_tokens)
            out.update(zip(rows, gen, strict=True))
    return [out[i] for i in range(len(prompts))]


def kobest_scores(model: torch.nn.Module, tokenizer: Any, kb: KoBEST) -> dict[str, Any]:
    """train.eval.kobest.evaluate on the (model, tokenizer) in memory: the evaluation report."""
    from train.eval.kobest import evaluate

    return evaluate((model, tokenizer), kb.tasks, shots=kb.shots, data_dir=kb.data_dir, split=kb.split,
                    limit=kb.limit, progress=False)


def kobest_row(results: dict[str, dict[int, dict[str, float]]]) -> dict[str, Any]:
    """``kobest``: {task: {shots (str): metrics}} and ``kobest_f1``: the mean macro F1 over every
    task and shot count."""
    f1s = [m["f1"] for by_shots in results.values() for m in by_shots.values()]
    return {"kobest": {task: {str(k): {key: _finite(v) for key, v in m.items()} for k, m in by_shots.items()}
                       for task, by_shots in results.items()},
            "kobest_f1": float(np.mean(f1s))}


def _finite(v: float) -> float | None:
    """NaN (a standard error of one example) -> None: selection.json stays valid JSON."""
    return v if math.isfinite(v) else None


# -- decisions --------------------------------------------------------------------------------


def flag_degenerate(rows: list[dict[str, Any]], th: Thresholds) -> None:
    """Set ``degenerate`` and ``reasons`` on each row (rows in step order)."""
    best_rep = best_run = math.inf
    for row in rows:
        reasons = []
        rep, run = row["seq_rep_4"], row["mean_longest_run"]
        if math.isfinite(best_rep) and rep > th.rep_ratio * best_rep and rep - best_rep >= th.rep_margin:
            reasons.append(f"seq-rep-4 {rep:.3f} vs best earlier {best_rep:.3f}")
        if math.isfinite(best_run) and run > th.run_ratio * best_run and run - best_run >= th.run_margin:
            reasons.append(f"mean longest run {run:.1f} vs best earlier {best_run:.1f} tokens")
        row["degenerate"] = bool(reasons)
        row["reasons"] = reasons
        best_rep, best_run = min(best_rep, rep), min(best_run, run)


def recommend(rows: list[dict[str, Any]], key: str = "val_loss", higher_is_better: bool = False) -> int | None:
    """Index of the non-degenerate row with the lowest ``key`` (the highest with
    ``higher_is_better``), the earliest on a tie; None when every row is flagged or has no value."""
    ok = [i for i, r in enumerate(rows)
          if not r["degenerate"] and r.get(key) is not None and math.isfinite(r[key])]
    if not ok:
        return None
    return (max if higher_is_better else min)(ok, key=lambda i: rows[i][key])


def training_curve(run: Path) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    """(per-step records with loss and epoch, epoch boundaries {epoch, step}) from metrics.jsonl;
    the last record of a step wins (a resumed run logs the steps after its checkpoint again)."""
    path = run / "metrics.jsonl"
    steps: dict[int, dict[str, float]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            if "loss" in rec and "step" in rec:
                steps[int(rec["step"])] = {"step": int(rec["step"]), "loss": rec["loss"], "epoch": rec.get("epoch", 0.0)}
    curve = [steps[s] for s in sorted(steps)]
    boundaries = []
    for prev, cur in zip(curve, curve[1:], strict=False):
        for e in range(math.floor(prev["epoch"]) + 1, math.floor(cur["epoch"]) + 1):
            boundaries.append({"epoch": e, "step": cur["step"]})
    return curve, boundaries


# -- the command ------------------------------------------------------------------------------


def select(run: str | Path, out: str | Path | None = None, settings: Settings | None = None,
           log: Any = print) -> dict[str, Any]:
    """Evaluate the run's checkpoints, flag, recommend; write selection.{json,md,png}."""
    from train.eval.report import write_markdown, write_plot

    settings = settings or Settings()
    if settings.rank_by not in RANK_KEYS:
        raise ValueError(f"rank by {settings.rank_by!r}: choose from {', '.join(RANK_KEYS)}")
    kb = settings.kobest
    if settings.rank_by == "kobest" and kb is None:
        raise ValueError("ranking by KoBEST needs KoBEST scores: add --kobest (Settings.kobest)")
    kobest_info: dict[str, Any] | None = None
    if kb is not None:
        from train.eval.kobest import prepare

        # Bad data (a missing split, a wrong column) fails before any checkpoint is loaded.
        names, shots, _, _ = prepare(kb.tasks, kb.shots, kb.data_dir, kb.split)
        if kb.limit is not None and kb.limit < 1:
            raise ValueError(f"KoBEST limit {kb.limit}: must be positive")
        kobest_info = {"tasks": names, "shots": shots, "data_dir": str(kb.data_dir), "split": kb.split,
                       "limit": kb.limit}
    run = Path(run)
    if run.name == "checkpoints" and not (run / "checkpoints").is_dir():
        run = run.parent  # given RUN/checkpoints: metrics.jsonl is one level up
    out = Path(out) if out else run
    out.mkdir(parents=True, exist_ok=True)
    paths = list_checkpoints(run)
    chosen = paths[:: max(settings.every, 1)]
    if paths[-1] not in chosen:
        chosen.append(paths[-1])
    last = open_checkpoint(paths[-1])
    tokens, prompts, source = held_out(last, settings)
    tokenizer = None
    if last.tokenizer_path is not None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(last.tokenizer_path))
    needs = {"--prompts": settings.prompts_file, "--kobest": kb, "--rank-by bpb": settings.rank_by == "bpb"}
    for what, needed in needs.items():
        if needed and tokenizer is None:
            raise ExportError(f"{what} needs the run's tokenizer, and {last.path} has none recorded")
    if settings.prompts_file:
        prompts = file_prompts(settings.prompts_file, tokenizer)
        source = f"{len(prompts)} prompts from {settings.prompts_file}"
    targets = tokens[:, 1:]  # the tokens the validation loss scores
    n_bytes = None
    if tokenizer is not None:
        size = max(len(tokenizer), int(tokens.max()) + 1)
        n_bytes = int(token_bytes(tokenizer, size)[targets].sum()) or None
    log(f"selecting among {len(chosen)} of {len(paths)} checkpoints of {run}: {len(tokens)} validation samples "
        f"of {tokens.shape[1] - 1} tokens" + (f" ({n_bytes} bytes)" if n_bytes else "")
        + f", {len(prompts)} prompts ({source})"
        + (f"; KoBEST {', '.join(kobest_info['tasks'])}, {kb.split} split" if kobest_info else ""))

    rows = []
    for path in chosen:
        start = time.perf_counter()
        c = open_checkpoint(path)
        torch_dtype, why = inference_dtype(settings.device, c.precision, settings.dtype)
        if path == chosen[0]:
            log(f"  weights in {why}")
        model = hf_model(c, settings.device, torch_dtype)
        row: dict[str, Any] = {"checkpoint": str(path), "step": c.step, "epoch": c.epoch,
                               "consumed_tokens": c.meta["state"].get("consumed_tokens")}
        row.update(validation(model, tokens, settings))
        row["bpb"] = row["val_loss"] * targets.size / math.log(2) / n_bytes if n_bytes else None
        conts = greedy(model, prompts, settings)
        row.update(summarize(conts))
        if tokenizer is not None:
            row["sample"] = {"prompt": tokenizer.decode(prompts[0]), "continuation": tokenizer.decode(conts[0])}
        if kb is not None:
            t0 = time.perf_counter()
            res = kobest_scores(model, tokenizer, kb)
            row.update(kobest_row(res["results"]))
            row["kobest_seconds"] = round(time.perf_counter() - t0, 2)
            if "files" not in kobest_info:
                kobest_info.update(
                    examples={t: n["effective"] for t, n in res["samples"].items()},
                    files={t: d["eval"] for t, d in res["data"].items()},
                    templates={t: {"name": tpl["name"], "sha256": tpl["sha256"]} for t, tpl in res["templates"].items()},
                    max_length=res["settings"]["max_length"])
        row["seconds"] = round(time.perf_counter() - start, 2)
        rows.append(row)
        del model
        log(f"  step {c.step:>8} epoch {c.epoch:.3f}: val loss {row['val_loss']:.4f}"
            + (f", bpb {row['bpb']:.4f}" if row["bpb"] is not None else "")
            + f", seq-rep-4 {row['seq_rep_4']:.3f}, longest run {row['longest_run']}"
            + (f", KoBEST mean F1 {row['kobest_f1']:.4f} ({row['kobest_seconds']:.1f} s)" if kb is not None else "")
            + f" ({row['seconds']:.1f} s)")

    flag_degenerate(rows, settings.thresholds)
    key, higher = RANK_KEYS[settings.rank_by]
    best = recommend(rows, key, higher)
    curve, boundaries = training_curve(run)
    report = {
        "run": str(run),
        "recommended": rows[best]["checkpoint"] if best is not None else None,
        "recommended_step": rows[best]["step"] if best is not None else None,
        "rank_by": settings.rank_by,
        "checkpoints": rows,
        "epoch_boundaries": boundaries,
        "settings": {k: v for k, v in asdict(settings).items() if k not in ("thresholds", "kobest")},
        "thresholds": asdict(settings.thresholds),
        "prompt_source": source,
        "validation": {"samples": int(len(tokens)), "tokens_per_sample": int(tokens.shape[1] - 1),
                       "tokens": int(targets.size), "bytes": n_bytes},
        "kobest": kobest_info,
    }
    (out / "selection.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    write_markdown(report, out / "selection.md")
    write_plot(report, curve, out / "selection.png")
    flagged = [r["step"] for r in rows if r["degenerate"]]
    log(f"degenerate: {flagged or 'none'}; recommended by {settings.rank_by}: "
        + (f"step {report['recommended_step']} ({report['recommended']})" if best is not None else "none")
        + f"\nwrote {out / 'selection.json'}, selection.md, selection.png")
    return report


EPILOG = """\
A checkpoint is flagged degenerate when, compared with the best (lowest) value among the
checkpoints evaluated before it, seq-rep-4 is above --rep-ratio times it and at least
--rep-margin higher, or the mean longest run of one token is above --run-ratio times it and
at least --run-margin tokens longer. The first checkpoint is never flagged. The recommended
checkpoint is the non-degenerate one with the lowest validation loss (--rank-by val_loss), the
lowest bits per byte (bpb: within a run the same order as val_loss) or the highest mean KoBEST
macro F1 (kobest, needs --kobest); on a tie, the earliest.
Bits per byte: validation nats / ln 2 / UTF-8 bytes of the scored tokens decoded with the run's
tokenizer (EOS predictions count in the loss and add no bytes).
KoBEST (--kobest): every selected checkpoint is evaluated in memory as `koneox eval` would
evaluate its export; default data: the bundled dev splits (data/samples/kobest, 2,710 examples).
"""


def add_arguments(parser: Any) -> None:
    import argparse

    t, s = Thresholds(), Settings()
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("run", metavar="RUN", help="run directory (RUN/checkpoints/stepNNNNNNNN ...)")
    parser.add_argument("--prompts", metavar="FILE", default=None,
                        help="prompts, one per line (or .jsonl with a 'text' field); default: the first "
                             f"{s.prefix_tokens} tokens of {s.num_prompts} validation documents")
    parser.add_argument("--every", type=int, default=1, metavar="K", help="evaluate every K-th checkpoint (and the last)")
    parser.add_argument("--out", default=None, help="where selection.{json,md,png} go (default: RUN)")
    parser.add_argument("--num-prompts", type=int, default=s.num_prompts)
    parser.add_argument("--new-tokens", type=int, default=s.new_tokens, help="greedy continuation length")
    parser.add_argument("--val-samples", type=int, default=s.val_samples, help="validation samples of seq_len tokens")
    parser.add_argument("--batch-size", type=int, default=s.batch_size)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default=None,
                        help="weights dtype (default: the training precision on a GPU, fp32 on a CPU)")
    parser.add_argument("--rep-ratio", type=float, default=t.rep_ratio,
                        help="degenerate when seq-rep-4 > RATIO x the best earlier checkpoint's ...")
    parser.add_argument("--rep-margin", type=float, default=t.rep_margin, help="... and >= MARGIN above it")
    parser.add_argument("--run-ratio", type=float, default=t.run_ratio,
                        help="or when the mean longest run of one token > RATIO x the best earlier ...")
    parser.add_argument("--run-margin", type=float, default=t.run_margin, help="... and >= MARGIN tokens longer")
    parser.add_argument("--kobest", action="store_true",
                        help="also evaluate KoBEST (acc, macro F1) on every selected checkpoint")
    parser.add_argument("--kobest-tasks", default=None, metavar="TASKS",
                        help="comma-separated kobest_boolq,kobest_copa,kobest_hellaswag,kobest_sentineg,kobest_wic "
                             "or 'kobest' for all (default kobest)")
    parser.add_argument("--shots", default=None,
                        help="KoBEST few-shot counts, comma-separated (default 0; above 0 needs the train split)")
    parser.add_argument("--kobest-data", default=None, metavar="DIR",
                        help="KoBEST data directory, DIR/<task>/<split>.tsv|jsonl|parquet (default: the bundled "
                             "dev splits, data/samples/kobest)")
    parser.add_argument("--kobest-split", default=None, choices=["dev", "test", "train"],
                        help="KoBEST split evaluated (default dev)")
    parser.add_argument("--kobest-limit", type=int, default=None, metavar="N",
                        help="KoBEST: only the first N examples of each task")
    parser.add_argument("--rank-by", choices=list(RANK_KEYS), default=s.rank_by,
                        help="recommend the lowest val_loss (default), the lowest bpb, or the highest mean "
                             "KoBEST macro F1 (kobest, needs --kobest)")


def run(args: Any) -> int:
    def fail(msg: str) -> int:
        print(f"koneox select: {msg}", file=sys.stderr)
        return 2

    if args.rank_by == "kobest" and not args.kobest:
        return fail("--rank-by kobest needs --kobest (KoBEST is evaluated only when asked)")
    kobest_opts = {"--kobest-tasks": args.kobest_tasks, "--shots": args.shots, "--kobest-data": args.kobest_data,
                   "--kobest-split": args.kobest_split, "--kobest-limit": args.kobest_limit}
    kobest = None
    if args.kobest:
        try:
            shots = (0,) if args.shots is None else tuple(int(x) for x in args.shots.split(",") if x.strip())
        except ValueError:
            return fail(f"--shots {args.shots!r}: comma-separated non-negative integers, e.g. 0")
        d = KoBEST()
        kobest = KoBEST(tasks=args.kobest_tasks or d.tasks, shots=shots, data_dir=args.kobest_data or d.data_dir,
                        split=args.kobest_split or d.split, limit=args.kobest_limit)
    else:
        stray = [name for name, value in kobest_opts.items() if value is not None]
        if stray:
            return fail(f"{', '.join(stray)} without --kobest: add --kobest to evaluate KoBEST")
    th = Thresholds(rep_ratio=args.rep_ratio, rep_margin=args.rep_margin, run_ratio=args.run_ratio,
                    run_margin=args.run_margin)
    settings = Settings(prompts_file=args.prompts, num_prompts=args.num_prompts, new_tokens=args.new_tokens,
                        val_samples=args.val_samples, batch_size=args.batch_size, every=args.every,
                        device=args.device, dtype=args.dtype, thresholds=th, kobest=kobest, rank_by=args.rank_by)
    try:
        select(args.run, args.out, settings)
    except (ExportError, FileNotFoundError, ValueError) as e:  # ValueError includes EvalError (bad KoBEST data)
        return fail(str(e))
    return 0
