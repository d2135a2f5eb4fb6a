"""selection.md (a table) and selection.png (curves) from a selection report."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _fmt_tokens(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


def write_markdown(report: dict[str, Any], path: Path) -> None:
    rows = report["checkpoints"]
    rep_key = next(k for k in rows[0] if k.startswith("rep_"))
    lines = [f"# Checkpoint selection: {report['run']}", ""]
    if report["recommended"]:
        lines.append(f"**Recommended: step {report['recommended_step']}** (`{report['recommended']}`): the lowest "
                     "validation loss among checkpoints not flagged as degenerate.")
    else:
        lines.append("**No checkpoint recommended**: every evaluated checkpoint is flagged as degenerate.")
    lines += ["", f"| step | epoch | tokens | val loss | val ppl | seq-rep-1 | seq-rep-4 | {rep_key.replace('_', '/')} "
              "| longest run (mean) | distinct-2 | |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        mark = "**recommended**" if r["checkpoint"] == report["recommended"] else ""
        if r["degenerate"]:
            mark = "DEGENERATE: " + "; ".join(r["reasons"])
        lines.append(
            f"| {r['step']} | {r['epoch']:.3f} | {_fmt_tokens(r.get('consumed_tokens'))} | {r['val_loss']:.4f} | "
            f"{r['val_ppl']:.4g} | {r['seq_rep_1']:.3f} | {r['seq_rep_4']:.3f} | {r[rep_key]:.3f} | "
            f"{r['longest_run']} ({r['mean_longest_run']:.1f}) | {r['distinct_2']:.3f} | {mark} |"
        )
    th, st, val = report["thresholds"], report["settings"], report["validation"]
    bounds = ", ".join(f"epoch {b['epoch']} at step {b['step']}" for b in report["epoch_boundaries"]) or "none crossed"
    lines += [
        "",
        f"- Validation: {val['samples']} samples of {val['tokens_per_sample']} tokens from the run's validation "
        "split (documents never trained on); rep/l teacher-forced on the same text.",
        f"- Generation: {st['new_tokens']}-token greedy continuations of {report['prompt_source']}.",
        f"- Degenerate: seq-rep-4 > {th['rep_ratio']} x the best earlier checkpoint's and >= {th['rep_margin']} "
        f"above it, or mean longest run > {th['run_ratio']} x the best earlier and >= {th['run_margin']:g} tokens "
        "longer.",
        f"- Epoch boundaries (from metrics.jsonl): {bounds}.",
    ]
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
    fig, (ax_loss, ax_rep) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True, height_ratios=[3, 2])
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
    ax_rep.plot(steps, [r["seq_rep_4"] for r in rows], "o-", color="tab:orange", label="seq-rep-4 (greedy)")
    ax_rep.plot(steps, [r["seq_rep_1"] for r in rows], ".--", color="tab:orange", alpha=0.5, label="seq-rep-1")
    n = report["settings"]["new_tokens"]
    ax_rep.plot(steps, [r["mean_longest_run"] / n for r in rows], "s:", color="tab:brown", alpha=0.7,
                label=f"mean longest run / {n} tokens")
    for ax, key in ((ax_loss, "val_loss"), (ax_rep, "seq_rep_4")):
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
    for b in report["epoch_boundaries"]:
        ax_loss.annotate(f"epoch {b['epoch']} starts", (b["step"], 1.0), xycoords=("data", "axes fraction"),
                         xytext=(3, -12), textcoords="offset points", color="purple", fontsize=9)
    ax_loss.set_ylabel("loss (nats/token)")
    ax_rep.set_ylabel("repetition")
    ax_rep.set_ylim(-0.02, 1.02)
    ax_rep.set_xlabel("step")
    ax_loss.set_title(f"checkpoint selection: {Path(report['run']).name}")
    ax_loss.legend(loc="lower left", fontsize=9)
    ax_rep.legend(loc="center left", fontsize=9)
    for ax in (ax_loss, ax_rep):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
