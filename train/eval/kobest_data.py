"""KoBEST examples from a directory, in either published layout.

    DIR/<dataset>/<split>.tsv                      original TSV (SKT-LSL/KoBEST_datarepo columns)
    DIR/<dataset>/<split>.jsonl[.gz] | .parquet    Hugging Face field names (skt/kobest_v1),
                                                   0-based int labels

``DIR/kobest_<dataset>/`` is accepted as well, and the dev split may be called ``validation``
(the Hugging Face name). The layout is detected per file from its columns: the template's
Hugging Face fields, or else its TSV columns. Every example comes back as a dict of the
template's fields plus ``label`` (0-based int), whatever the layout.

TSV reading: tab-separated with standard CSV quoting (a field in double quotes may hold tabs,
``""`` is one quote). On the shipped KoBEST files this gives the same strings as
``pandas.read_csv(sep="\\t")``, from which the Hugging Face copy was built.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from train.eval.templates import EvalError, Template

SPLITS = ("train", "dev", "test")
_ALIASES = {"dev": ("dev", "validation"), "train": ("train",), "test": ("test",)}
_SUFFIXES = (".tsv", ".jsonl", ".jsonl.gz", ".parquet")


@dataclass
class Split:
    docs: list[dict[str, Any]]
    path: Path
    layout: str
    """'tsv' (original columns) or 'hf' (Hugging Face field names)."""

    def record(self) -> dict[str, Any]:
        return {"path": str(self.path), "sha256": sha256_file(self.path), "layout": self.layout,
                "examples": len(self.docs)}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def find_split(data_dir: str | Path, dataset: str, split: str) -> Path:
    """The file holding ``split`` of ``dataset`` under ``data_dir`` (error: what was looked for)."""
    if split not in _ALIASES:
        raise EvalError(f"split {split!r}: choose from {', '.join(SPLITS)}")
    root = Path(data_dir)
    if not root.is_dir():
        raise EvalError(f"{root}: KoBEST data directory not found")
    tried = []
    for sub in (dataset, f"kobest_{dataset}"):
        for name in _ALIASES[split]:
            for suffix in _SUFFIXES:
                p = root / sub / f"{name}{suffix}"
                tried.append(p)
                if p.is_file():
                    return p
    raise EvalError(f"{root / dataset / (split + '.tsv')}: no {split} split of KoBEST {dataset} "
                    f"(looked for {', '.join(str(p.relative_to(root)) for p in tried)})")


def _tsv_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t")
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def _jsonl_rows(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    opener = gzip.open if path.name.endswith(".gz") else open
    rows: list[dict[str, Any]] = []
    with opener(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                raise EvalError(f"{path}: line {n}: not JSON ({e})") from None
            if not isinstance(row, dict):
                raise EvalError(f"{path}: line {n}: a record must be a JSON object")
            rows.append(row)
    names: list[str] = []
    for row in rows:
        names += [k for k in row if k not in names]
    return names, rows


def _parquet_rows(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow's own error types
        raise EvalError(f"{path}: not a readable parquet file ({type(e).__name__}: {e})") from None
    return list(table.column_names), table.to_pylist()


def _hf_label(value: Any, where: str, n_choices: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise EvalError(f"{where}: label {value!r} is not a 0-based integer")
    if not 0 <= value < n_choices:
        raise EvalError(f"{where}: label {value} outside 0..{n_choices - 1}")
    return value


def load_split(template: Template, data_dir: str | Path, split: str) -> Split:
    """Every example of one split, as dicts of the template's fields plus ``label``."""
    path = find_split(data_dir, template.dataset, split)
    if path.name.endswith(".tsv"):
        names, rows = _tsv_rows(path)
    elif path.name.endswith(".parquet"):
        names, rows = _parquet_rows(path)
    else:
        names, rows = _jsonl_rows(path)
    fields, label = template.fields, template.label
    n_choices = len(template.choices)
    hf_names = [*fields, label["field"]]
    tsv_names = [*fields.values(), label["column"]]
    if all(n in names for n in hf_names):
        layout = "hf"
    elif all(n in names for n in tsv_names):
        layout = "tsv"
    else:
        wanted = tsv_names if path.name.endswith(".tsv") else hf_names
        missing = [n for n in wanted if n not in names]
        kind = "column" if path.name.endswith(".tsv") else "field"
        raise EvalError(f"{path}: no {kind} {', '.join(map(repr, missing))} (has: {', '.join(names) or 'nothing'}); "
                        f"{template.task} needs the Hugging Face fields {', '.join(hf_names)} "
                        f"or the TSV columns {', '.join(tsv_names)}")
    line0 = 2 if path.name.endswith(".tsv") else 1  # TSV: header line first
    docs = []
    for i, row in enumerate(rows):
        where = f"{path}: {'row' if path.name.endswith('.parquet') else 'line'} {i + line0}"
        if layout == "hf":
            missing = [n for n in hf_names if n not in row]
            if missing:
                raise EvalError(f"{where}: no field {', '.join(map(repr, missing))}")
            doc = {f: row[f] for f in fields}
            doc["label"] = _hf_label(row[label["field"]], where, n_choices)
        else:
            doc = {f: row[c] for f, c in fields.items()}
            raw = row[label["column"]]
            key = str(raw).strip().lower()
            if key not in label["values"]:
                raise EvalError(f"{where}: column {label['column']!r} is {raw!r}; expected one of "
                                f"{', '.join(label['values'])}")
            doc["label"] = label["values"][key]
        for f in fields:
            if not isinstance(doc[f], str):
                raise EvalError(f"{where}: field {f!r} is {type(doc[f]).__name__}, not text")
        docs.append(doc)
    if not docs:
        raise EvalError(f"{path}: no examples")
    return Split(docs=docs, path=path, layout=layout)
