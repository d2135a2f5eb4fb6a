"""``koneox clean INPUT... --out DIR``: a thin wrapper over ``data.clean.clean_files``."""

from __future__ import annotations

import argparse
import os
import sys

from data.clean.config import STEP_NAMES, CleanConfig, load_clean_config
from data.config_loader import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``koneox clean``."""
    parser.add_argument(
        "inputs", nargs="+", help=".jsonl, .jsonl.gz, .parquet, .txt files or saved datasets dirs"
    )
    parser.add_argument("--out", required=True, help="output directory (shards, report.json, report.md)")
    parser.add_argument("--config", help="koneox YAML config; its data.clean section is used")
    parser.add_argument("--num-proc", type=int, default=os.cpu_count() or 1, help="worker processes")
    parser.add_argument("--steps", help=f"comma-separated subset of: {','.join(STEP_NAMES)}")
    parser.add_argument("--text-field", help="field holding the text (default: config, 'text')")
    parser.add_argument(
        "--keep-rejects", action="store_true", help="write dropped documents with their reason"
    )
    parser.add_argument("--strict", action="store_true", help="fail at the first unreadable input record")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Run the pipeline and print where the report is; 2 on a config error, 1 on strict-mode input
    errors, 128 + the signal number when SIGTERM/SIGINT stopped it (rerunning the same command resumes)."""
    from data.clean.pipeline import CleanInterrupted, StrictInputError, clean_files

    try:
        cfg = load_clean_config(args.config) if args.config else CleanConfig()
    except ConfigError as e:
        print(f"koneox clean: config error: {e}", file=sys.stderr)
        return 2
    if args.text_field:
        cfg.text_field = args.text_field
    steps = [s.strip() for s in args.steps.split(",") if s.strip()] if args.steps else None
    try:
        report = clean_files(
            args.inputs,
            args.out,
            cfg,
            num_proc=max(1, args.num_proc),
            steps=steps,
            keep_rejects=args.keep_rejects,
            strict=args.strict,
            progress=not args.no_progress and sys.stderr.isatty(),
        )
    except StrictInputError as e:
        print(f"koneox clean: {e}", file=sys.stderr)
        return 1
    except CleanInterrupted as e:
        print(f"koneox clean: {e}", file=sys.stderr)
        return 128 + e.signum
    print(
        f"{report['documents_in']:,} in -> {report['output_documents']:,} out "
        f"(kept {report['kept']:,}, dropped {report['dropped_total']:,}, rejected {report['rejected_input']:,}) "
        f"in {report['seconds']:.1f} s; report: {args.out}/report.md"
    )
    return 0 if report["accounting_holds"] else 1
