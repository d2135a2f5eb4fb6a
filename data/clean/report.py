"""report.json (machine-readable) and report.md (for people) of one cleaning run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from data.stage import write_text_atomic

MAX_LISTED = 50  # bad records listed in report.md; report.json lists all of them


def render_markdown(report: dict[str, Any]) -> str:
    """The report as a short Markdown page: accounting first, then drops, PII, special-token
    strings and speed."""
    r = report
    dropped_total = r["dropped_total"]
    lines = [
        "# Cleaning report",
        "",
        f"Steps: {', '.join(r['steps']) or '(none)'}; {r['num_proc']} process(es), {r['seconds']:.1f} s.",
        "",
        "## Accounting",
        "",
        "| | documents |",
        "|---|---:|",
        f"| in (records read) | {r['documents_in']:,} |",
        f"| kept | {r['kept']:,} |",
        f"| dropped | {dropped_total:,} |",
        f"| rejected input | {r['rejected_input']:,} |",
        "",
        f"in = kept + dropped + rejected: {r['documents_in']:,} = {r['kept']:,} + {dropped_total:,} + "
        f"{r['rejected_input']:,} -> **{'holds' if r['accounting_holds'] else 'BROKEN'}**",
        "",
        f"Output: {r['output_documents']:,} documents in {len(r['shards'])} shard(s)"
        + (f" ({r['merged_by_join']:,} kept inputs merged by join)" if r["merged_by_join"] else "")
        + f"; {r['chars_in']:,} -> {r['chars_out']:,} characters.",
        "",
        "## Dropped by reason",
        "",
        "| reason | documents | share of input |",
        "|---|---:|---:|",
    ]
    n = max(1, r["documents_in"])
    for reason, count in sorted(r["dropped"].items(), key=lambda kv: -kv[1]):
        lines.append(f"| {reason} | {count:,} | {100 * count / n:.2f}% |")
    lines += ["", "## Inputs", "", "| file | records | rejected |", "|---|---:|---:|"]
    for item in r["inputs"]:
        lines.append(f"| {item['path']} | {item['records']:,} | {item['rejected']:,} |")
    if r["rejected_items"]:
        lines += ["", "## Rejected input", "", "| file:line | reason | detail |", "|---|---|---|"]
        for item in r["rejected_items"][:MAX_LISTED]:
            detail = item["detail"].replace("|", "\\|")
            lines.append(f"| {item['file']}:{item['line']} | {item['reason']} | {detail} |")
        if len(r["rejected_items"]) > MAX_LISTED:
            lines.append(f"| ... | {len(r['rejected_items']) - MAX_LISTED} more in report.json | |")
    lines += ["", "## PII replaced", "", "| type | count |", "|---|---:|"]
    for kind, count in r["pii"].items():
        lines.append(f"| {kind} | {count:,} |")
    if r["special_tokens"]:
        lines += ["", "## Special-token strings escaped", "", "| string | count |", "|---|---:|"]
        for string, count in r["special_tokens"].items():
            cell = string.replace("|", "\\|")  # a bar inside a table cell must be escaped
            lines.append(f"| `{cell}` | {count:,} |")
    lines += [
        "",
        "## Throughput",
        "",
        f"{r['docs_per_s']:,.0f} docs/s, {r['mb_per_s']:.2f} MB/s of input text "
        f"({r['docs_per_s_per_core']:,.0f} docs/s, {r['mb_per_s_per_core']:.2f} MB/s per process).",
        "",
        "CPU seconds per step (summed over processes): "
        + ", ".join(f"{k} {v:.1f}" for k, v in r["step_cpu_seconds"].items()),
        "",
    ]
    return "\n".join(lines)


def write_report(report: dict[str, Any], out_dir: str | Path) -> None:
    """Write ``report.json`` and ``report.md`` into ``out_dir``, each under a temporary name
    first (``data/stage.py``), so a kill never leaves half a report."""
    out = Path(out_dir)
    write_text_atomic(out / "report.json", json.dumps(report, ensure_ascii=False, indent=2) + "\n")
    write_text_atomic(out / "report.md", render_markdown(report))
