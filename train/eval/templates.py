"""Prompt templates for multiple-choice tasks, kept as data (``train/eval/tasks/<task>.yaml``).

A template says how one example (a "document": a dict of fields plus a 0-based ``label``)
becomes a context string and the strings of its choices, and how few-shot examples are put
before it. The shipped KoBEST templates reproduce lm-evaluation-harness 0.4.13's ``kobest_*``
tasks exactly (REFERENCE §6); ``--template FILE`` loads a variant. Keys::

    task               the task this template is for (kobest_boolq ...); a variant names the
                       shipped task it changes and inherits every key it does not set
    name               recorded in results (default for a variant: its file name)
    dataset            KoBEST subset directory: DIR/<dataset>/<split>.tsv|jsonl|parquet
    fields             {field: TSV column}: the fields the templates use, named as in the
                       Hugging Face copy (skt/kobest_v1); the TSV column each comes from
    label              field (0-based int in the Hugging Face layout), column (in the TSV) and
                       values ({TSV text: label}, matched case-insensitively after strip)
    description        text put before everything (template; "" = none)
    text               the example's context (template)
    choices            list of templates, one per label: the scored continuations
    target_delimiter   between a context and a choice (" ")
    fewshot_delimiter  after each few-shot example's answer ("\\n\\n")
    fewshot_split      where few-shot examples come from (train)
    metrics            any of acc, f1 (macro), acc_norm (log-likelihood / characters of the choice)

Template syntax: Jinja2 (the engine the harness uses, with the same settings: undefined fields
are errors, a trailing newline is kept). ``{{field}}`` inserts a field; expressions work, e.g.
COPA's ``{{ {'원인': ' 왜냐하면', '결과': ' 그래서'}[question.strip()] }}``.

A context with k few-shot examples is, exactly as the harness builds it::

    description + sum(text(ex) + target_delimiter + choice(ex)[label(ex)] + fewshot_delimiter
                      for ex in examples) + text(doc)

and each choice is scored as the continuation ``target_delimiter + choice``. The examples
are drawn with one ``random.Random(seed)`` per (task, shots) that samples ``k`` of the
few-shot split for each evaluated document in order (the harness's default sampler). When
the evaluated split is the few-shot split itself, ``k + 1`` are drawn and the document is
removed, as the harness does when its few-shot and test splits coincide.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

TASK_DIR = Path(__file__).resolve().parent / "tasks"
METRICS = ("acc", "f1", "acc_norm")
_KEYS = ("task", "name", "dataset", "fields", "label", "description", "text", "choices",
         "target_delimiter", "fewshot_delimiter", "fewshot_split", "metrics")


class EvalError(ValueError):
    """Bad evaluation input: the message names the file (and the key or field)."""


def _env() -> Any:
    import jinja2

    return jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)


class _Dumper(yaml.SafeDumper):
    """Strings with newlines or edge whitespace in double quotes ("\\n\\n", " "), as written by hand."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    quoted = "\n" in value or value != value.strip()
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"' if quoted else None)


_Dumper.add_representer(str, _str)


@dataclass
class Template:
    """One task's prompt template (keys: see the module docstring)."""

    task: str
    name: str
    dataset: str
    fields: dict[str, str]
    label: dict[str, Any]
    text: str
    choices: list[str]
    description: str = ""
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    fewshot_split: str = "train"
    metrics: list[str] = field(default_factory=lambda: ["acc", "f1"])
    source: str = ""
    """The file(s) it was read from (not part of the hash)."""

    def __post_init__(self) -> None:
        env = _env()
        where = self.source or self.name
        try:
            self._text = env.from_string(self.text)
            self._description = env.from_string(self.description) if self.description else None
            self._choices = [env.from_string(c) for c in self.choices]
        except Exception as e:  # jinja2.TemplateSyntaxError
            raise EvalError(f"{where}: template syntax error: {e}") from None

    # -- identity -------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k in _KEYS}

    @property
    def sha256(self) -> str:
        """Hash of everything that decides the prompts and metrics (all keys except the name)."""
        data = {k: v for k, v in self.to_dict().items() if k != "name"}
        blob = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def to_yaml(self) -> str:
        return yaml.dump(self.to_dict(), Dumper=_Dumper, allow_unicode=True, sort_keys=False, width=1000)

    def record(self) -> dict[str, str]:
        return {"name": self.name, "sha256": self.sha256, "source": self.source}

    # -- rendering ------------------------------------------------------------------------------

    def _render(self, template: Any, doc: dict[str, Any], what: str) -> str:
        try:
            return template.render(**doc)
        except Exception as e:  # jinja2.UndefinedError, KeyError in an expression, ...
            raise EvalError(f"{self.source or self.name}: rendering {what} failed for {doc}: "
                            f"{type(e).__name__}: {e}") from None

    def doc_text(self, doc: dict[str, Any]) -> str:
        return self._render(self._text, doc, "text")

    def doc_choices(self, doc: dict[str, Any]) -> list[str]:
        return [self._render(c, doc, f"choice {i}") for i, c in enumerate(self._choices)]

    def context(self, doc: dict[str, Any], examples: Sequence[dict[str, Any]] = ()) -> str:
        """The context string for ``doc`` after the few-shot ``examples`` (see the module doc)."""
        parts = [self._render(self._description, doc, "description")] if self._description else []
        for ex in examples:
            answer = self.doc_choices(ex)[ex["label"]]
            parts += [self.doc_text(ex), self.target_delimiter, answer, self.fewshot_delimiter]
        parts.append(self.doc_text(doc))
        return "".join(parts)

    def requests(self, doc: dict[str, Any], examples: Sequence[dict[str, Any]] = ()) -> list[tuple[str, str]]:
        """(context, continuation) per choice, continuation = target_delimiter + choice."""
        ctx = self.context(doc, examples)
        return [(ctx, self.target_delimiter + c) for c in self.doc_choices(doc)]


# -- loading ------------------------------------------------------------------------------------


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EvalError(f"{path}: template file not found") from None
    except yaml.YAMLError as e:
        raise EvalError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise EvalError(f"{path}: a template must be a YAML mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - set(_KEYS))
    if unknown:
        raise EvalError(f"{path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(_KEYS)}")
    return data


def _build(data: dict[str, Any], source: str) -> Template:
    missing = [k for k in ("task", "name", "dataset", "fields", "label", "text", "choices") if k not in data]
    if missing:
        raise EvalError(f"{source}: missing key(s) {', '.join(missing)}")
    if not isinstance(data["fields"], dict) or not all(isinstance(v, str) for v in data["fields"].values()):
        raise EvalError(f"{source}: fields must map each field name to its TSV column name")
    label = data["label"]
    if not isinstance(label, dict) or not {"field", "column", "values"} <= set(label):
        raise EvalError(f"{source}: label needs field, column and values")
    label = {**label, "values": {str(k).strip().lower(): int(v) for k, v in label["values"].items()}}
    choices = data["choices"]
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
        raise EvalError(f"{source}: choices must be a list of at least two template strings")
    if any(not 0 <= v < len(choices) for v in label["values"].values()):
        raise EvalError(f"{source}: label values {label['values']} must be choice indices 0..{len(choices) - 1}")
    metrics = list(data.get("metrics", ["acc", "f1"]))
    bad = [m for m in metrics if m not in METRICS]
    if bad:
        raise EvalError(f"{source}: metrics {bad} unknown; choose from {', '.join(METRICS)}")
    for key in ("text", "description", "target_delimiter", "fewshot_delimiter", "fewshot_split", "dataset", "name"):
        if key in data and not isinstance(data[key], str):
            raise EvalError(f"{source}: {key} must be a string, got {type(data[key]).__name__}")
    return Template(task=data["task"], name=data["name"], dataset=data["dataset"], fields=dict(data["fields"]),
                    label=label, text=data["text"], choices=list(choices),
                    description=data.get("description", ""), target_delimiter=data.get("target_delimiter", " "),
                    fewshot_delimiter=data.get("fewshot_delimiter", "\n\n"),
                    fewshot_split=data.get("fewshot_split", "train"), metrics=metrics, source=source)


def shipped(task: str) -> Template:
    """The template shipped for ``task`` (train/eval/tasks/<task>.yaml)."""
    path = TASK_DIR / f"{task}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in TASK_DIR.glob("*.yaml"))
        raise EvalError(f"unknown task {task!r}; choose from {', '.join(known)}")
    return _build(_read_yaml(path), str(path))


def load_template(path: str | Path) -> Template:
    """A template file: complete, or a variant of a shipped task that sets only what it changes."""
    path = Path(path)
    data = _read_yaml(path)
    if "task" not in data:
        raise EvalError(f"{path}: missing key 'task' (the task this template is for, e.g. kobest_boolq)")
    base_path = TASK_DIR / f"{data['task']}.yaml"
    if base_path.is_file():
        merged = {**_read_yaml(base_path), "name": path.stem, **data}
        return _build(merged, f"{path} (over {base_path.name})")
    return _build({"name": path.stem, **data}, str(path))


# -- few-shot sampling ----------------------------------------------------------------------------


def fewshot_indices(pool: Sequence[dict[str, Any]], k: int, docs: Sequence[dict[str, Any]], seed: int,
                    same_split: bool = False) -> list[list[int]]:
    """Indices into ``pool`` of the ``k`` examples put before each of ``docs`` (in order).

    One ``random.Random(seed)`` serves all documents in turn, as the harness's sampler does:
    the examples of document i depend on every draw before it, so the same ``limit`` and
    order give the same prompts. ``same_split``: ``docs`` come from ``pool`` itself; draw
    k + 1 and drop the document (and, if that leaves fewer than k, draw again from the
    pool without any copy of it).
    """
    if k == 0:
        return [[] for _ in docs]
    if k > len(pool) - (1 if same_split else 0):
        raise EvalError(f"{k} few-shot examples requested but the few-shot split has {len(pool)}")
    rnd = random.Random(seed)
    population = range(len(pool))
    out = []
    for doc in docs:
        if not same_split:
            out.append(rnd.sample(population, k))
            continue
        drawn = [i for i in rnd.sample(population, k + 1) if pool[i] != doc][:k]
        if len(drawn) < k:
            rest = [i for i in population if pool[i] != doc]
            drawn = [rest[j] for j in rnd.sample(range(len(rest)), k)]
        out.append(drawn)
    return out
