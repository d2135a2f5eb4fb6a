"""selection.md (a table) and selection.png (curves) from a selection report."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def _fmt_tokens(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


RANKED_BY = {"val_loss": "the lowest validation loss", "bpb": "the lowest bits per byte",
             "kobest": "the highest mean KoBEST macro F1"}


def _num(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def kobest_columns(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(header, task, shots key) of each per-task F1 column; the shot count is named only when
    several were evaluated."""
    kb = report.get("kobest")
    if not kb:
        return []
    many = len(kb["shots"]) > 1
    return [(task.removeprefix("kobest_") + (f" {k}-shot" if many else "") + " F1", task, str(k))
            for task in kb["tasks"] for k in kb["shots"]]


def write_markdown(report: dict[str, Any], path: Path) -> None:
    rows = report["checkpoints"]
    rep_key = next(k for k in rows[0] if k.startswith("rep_"))
    kb_cols = kobest_columns(report)
    lines = [f"# Checkpoint selection: {report['run']}", ""]
    if report["recommended"]:
        lines.append(f"**Recommended: step {report['recommended_step']}** (`{report['recommended']}`): "
                     f"{RANKED_BY[report['rank_by']]} among checkpoints not flagged as degenerate.")
    else:
        lines.append("**No checkpoint recommended**: every evaluated checkpoint is flagged as degenerate"
                     + (" or has no value to rank by." if report["rank_by"] != "val_loss" else "."))
    kb_head = "".join(f" {h} |" for h, _, _ in kb_cols) + (" KoBEST F1 (mean) |" if kb_cols else "")
    lines += ["", f"| step | epoch | tokens | val loss | val ppl | bits/byte |{kb_head} seq-rep-1 | seq-rep-4 | "
              f"{rep_key.replace('_', '/')} | longest run (mean) | distinct-2 | |",
              "|---:|---:|---:|---:|---:|---:|" + "---:|" * (len(kb_cols) + bool(kb_cols)) + "---:|---:|---:|---:|---:|---|"]
    for r in rows:
        mark = "**recommended**" if r["checkpoint"] == report["recommended"] else ""
        if r["degenerate"]:
            mark = "DEGENERATE: " + "; ".join(r["reasons"])
        kb_cells = "".join(f" {r['kobest'][task][k]['f1']:.4f} |" for _, task, k in kb_cols)
        if kb_cols:
            kb_cells += f" {r['kobest_f1']:.4f} |"
        lines.append(
            f"| {r['step']} | {r['epoch']:.3f} | {_fmt_tokens(r.get('consumed_tokens'))} | {r['val_loss']:.4f} | "
            f"{r['val_ppl']:.4g} | {_num(r.get('bpb'), '.4f')} |{kb_cells} {r['seq_rep_1']:.3f} | "
            f"{r['seq_rep_4']:.3f} | {r[rep_key]:.3f} | {r['longest_run']} ({r['mean_longest_run']:.1f}) | "
            f"{r['distinct_2']:.3f} | {mark} |"
        )
    th, st, val = report["thresholds"], report["settings"], report["validation"]
    bounds = ", ".join(f"epoch {b['epoch']} at step {b['step']}" for b in report["epoch_boundaries"]) or "none crossed"
    lines += [
        "",
        f"- Validation: {val['samples']} samples of {val['tokens_per_sample']} tokens from the run's validation "
        "split (documents never trained on); rep/l teacher-forced on the same text.",
        (f"- Bits per byte: the validation loss in bits over the {val['bytes']:,} UTF-8 bytes of the "
         f"{val['tokens']:,} scored tokens decoded with the run's tokenizer ({val['bytes'] / val['tokens']:.2f} "
         "bytes per token; EOS predictions count in the loss and add no bytes). The same text for every "
         "checkpoint: it orders checkpoints as the validation loss does." if val.get("bytes")
         else "- Bits per byte: not computed (the run recorded no tokenizer)."),
        f"- Generation: {st['new_tokens']}-token greedy continuations of {report['prompt_source']}.",
        f"- Degenerate: seq-rep-4 > {th['rep_ratio']} x the best earlier checkpoint's and >= {th['rep_margin']} "
        f"above it, or mean longest run > {th['run_ratio']} x the best earlier and >= {th['run_margin']:g} tokens "
        "longer.",
        f"- Epoch boundaries (from metrics.jsonl): {bounds}.",
    ]
    kb = report.get("kobest")
    if kb:
        shots = ", ".join(map(str, kb["shots"]))
        examples = ", ".join(f"{t.removeprefix('kobest_')} {n}" for t, n in kb["examples"].items())
        seconds = sum(r["kobest_seconds"] for r in rows) / len(rows)
        lines.append(
            f"- KoBEST: macro F1 at {shots} shots on the {kb['split']} split of `{kb['data_dir']}` "
            + (f"(first {kb['limit']} examples: " if kb["limit"] else "(examples: ") + f"{examples}), "
            "prompts as lm-evaluation-harness 0.4.13 (`koneox eval`); the mean is over the tasks"
            + (" and shot counts" if len(kb["shots"]) > 1 else "") + f"; {seconds:.1f} s per checkpoint.")
    samples = [r for r in rows if "sample" in r and (r["checkpoint"] == report["recommended"] or r["degenerate"])]
    if samples:
        lines += ["", "## Samples (first prompt)", ""]
        for r in samples:
            s = r["sample"]
            tag = "degenerate" if r["degenerate"] else "recommended"
            lines += [f"step {r['step']} ({tag}):", "", "```", f"{s['prompt']}|>>>|{s['continuation']}", "```", ""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_plot(report: dict[str, Any], curve: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on training machines
    import matplotlib.pyplot as plt

    rows = report["checkpoints"]
    steps = [r["step"] for r in rows]
    kb_cols = kobest_columns(report)
    if kb_cols:
        fig, (ax_loss, ax_kb, ax_rep) = plt.subplots(3, 1, figsize=(9, 9), sharex=True, height_ratios=[3, 2, 2])
    else:
        fig, (ax_loss, ax_rep) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True, height_ratios=[3, 2])
        ax_kb = None
    if curve:
        ax_loss.plot([c["step"] for c in curve], [c["loss"] for c in curve], color="0.6", lw=1, label="training loss")
    ax_loss.plot(steps, [r["val_loss"] for r in rows], "o-", color="tab:blue", label="validation loss (held out)")
    # A broken checkpoint can have a loss in the hundreds: keep the scale readable and write such
    # values at the top edge instead of letting them flatten every other curve.
    losses = sorted(r["val_loss"] for r in rows)
    typical = losses[len(losses) // 2]
    shown = [c["loss"] for c in curve] + [v for v in losses if v <= 2 * typical]
    top = max(shown) * 1.05
    ax_loss.set_ylim(min(shown) * 0.95, top)
    for r in rows:
        if r["val_loss"] > top:
            ax_loss.annotate(f"{r['val_loss']:.0f} ^", (r["step"], top), xytext=(0, -14), textcoords="offset points",
                             ha="center", color="tab:blue", fontsize=9)
    val = report["validation"]
    if val.get("bytes"):
        # bpb = val_loss x tokens / (ln 2 x bytes) on fixed text: a second scale of the same line.
        scale = val["tokens"] / (math.log(2) * val["bytes"])
        ax_bpb = ax_loss.twinx()
        lo, hi = ax_loss.get_ylim()
        ax_bpb.set_ylim(lo * scale, hi * scale)
        ax_bpb.set_ylabel("validation bits per byte", color="tab:blue")
    ax_rep.plot(steps, [r["seq_rep_4"] for r in rows], "o-", color="tab:orange", label="seq-rep-4 (greedy)")
    ax_rep.plot(steps, [r["seq_rep_1"] for r in rows], ".--", color="tab:orange", alpha=0.5, label="seq-rep-1")
    n = report["settings"]["new_tokens"]
    ax_rep.plot(steps, [r["mean_longest_run"] / n for r in rows], "s:", color="tab:brown", alpha=0.7,
                label=f"mean longest run / {n} tokens")
    panels = [(ax_loss, "val_loss"), (ax_rep, "seq_rep_4")]
    if ax_kb is not None:
        for header, task, k in kb_cols:
            ax_kb.plot(steps, [r["kobest"][task][k]["f1"] for r in rows], ".--", lw=1, alpha=0.6,
                       label=header.removesuffix(" F1"))
        ax_kb.plot(steps, [r["kobest_f1"] for r in rows], "o-", color="black", lw=2, label="mean")
        ax_kb.set_ylabel("KoBEST macro F1")
        ax_kb.legend(loc="best", fontsize=8, ncol=3)
        panels.insert(1, (ax_kb, "kobest_f1"))
    for ax, key in panels:
        bad = [r for r in rows if r["degenerate"]]
        if bad:
            ax.plot([r["step"] for r in bad], [r[key] for r in bad], "x", color="red", ms=12, mew=3,
                    label="degenerate" if ax is ax_rep else None)
        best = [r for r in rows if r["checkpoint"] == report["recommended"]]
        if best:
            ax.plot([best[0]["step"]], [best[0][key]], "*", color="green", ms=16,
                    label="recommended" if ax is ax_rep else None)
        for b in report["epoch_boundaries"]:
            ax.axvline(b["step"], color="purple", ls=":", lw=1.5)
        ax.grid(alpha=0.3)
    for b in report["epoch_boundaries"]:
        ax_loss.annotate(f"epoch {b['epoch']} starts", (b["step"], 1.0), xycoords=("data", "axes fraction"),
                         xytext=(3, -12), textcoords="offset points", color="purple", fontsize=9)
    ax_loss.set_ylabel("loss (nats/token)")
    ax_rep.set_ylabel("repetition")
    ax_rep.set_ylim(-0.02, 1.02)
    ax_rep.set_xlabel("step")
    ax_loss.set_title(f"checkpoint selection: {Path(report['run']).name} (recommended by {report['rank_by']})")
    ax_loss.legend(loc="lower left", fontsize=9)
    ax_rep.legend(loc="center left", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
