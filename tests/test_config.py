"""Typed configs: YAML over defaults, dotted overrides, errors that name file and key."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import yaml

from data.clean.config import CleanConfig, load_clean_config
from data.config_loader import load_section
from tokenizer.config import TokenizerConfig
from train.config import CONFIG_DIR, Config, ConfigError, TrainConfig, load_config

SIZES = {"1.3b": 1_331_810_304, "3.8b": 3_809_974_272, "5.8b": 5_885_059_072, "12.8b": 12_893_603_840}


@pytest.mark.parametrize("name", ["tiny.yaml", *[f"{s}.yaml" for s in SIZES],
                                  *sorted(str(f.relative_to(CONFIG_DIR)) for f in CONFIG_DIR.glob("*/*.yaml"))])
def test_every_shipped_config_loads(name):
    cfg = load_config(name)
    assert isinstance(cfg, Config)
    if "/" in name:  # continued pretraining (configs/extend/): the shape comes from model.init_from
        assert cfg.model.init_from
    elif name != "tiny.yaml":
        size = name.removesuffix(".yaml")
        assert cfg.model.name == size
        assert cfg.model.num_parameters() == SIZES[size]
        # Each layout fills 256 GPUs: tensor_parallel x data_parallel.
        assert cfg.parallel.tensor_parallel * cfg.parallel.data_parallel == 256
        micro, accum, glob = cfg.batch_layout(cfg.parallel.data_parallel)
        assert glob == cfg.train.global_batch_size == micro * accum * cfg.parallel.data_parallel


def test_config_name_resolves_into_configs_dir_from_any_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_config("12.8b.yaml").model.hidden_size == 5120
    assert load_config("12.8b").model.num_layers == 40
    with pytest.raises(ConfigError, match="config file not found.*known: .*12.8b.yaml"):
        load_config("13b.yaml")


def test_overrides_are_typed_and_win_over_the_file():
    cfg = load_config("tiny.yaml", ["train.lr=1e-4", "model.num_layers=2", "train.precision=bf16",
                                    "logging.wandb.mode=disabled", "train.compile=true"])
    assert cfg.train.lr == 1e-4 and isinstance(cfg.train.lr, float)
    assert cfg.model.num_layers == 2 and cfg.model.hidden_size == 128
    assert cfg.train.precision == "bf16" and cfg.logging.wandb.mode == "disabled" and cfg.train.compile is True


def test_model_name_override_switches_the_whole_shape():
    cfg = load_config("tiny.yaml", ["model.name=5.8b", "data.seq_len=2048"])
    assert (cfg.model.hidden_size, cfg.model.num_layers, cfg.model.rotary_pct) == (4096, 28, 0.25)


def write(tmp_path, text: str):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    "text, message",
    [
        ("train:\n  lrr: 1.0\n", r"bad.yaml: train.lrr: unknown key \(did you mean train.lr\?\)"),
        ("train:\n  micro_batch_size: four\n", r"bad.yaml: train.micro_batch_size: expected an integer, got str"),
        ("train:\n  compile: 1\n", r"bad.yaml: train.compile: expected true or false"),
        ("train:\n  precision: fp8\n", r"bad.yaml: train.precision: must be one of"),
        ("model:\n  hidden_size: 130\n", r"bad.yaml: model.num_heads: hidden_size 130 is not divisible"),
        ("model:\n  rotary_pct: 0.47\n", r"bad.yaml: model.rotary_pct: rotary dims .* is odd"),
        ("model:\n  rotary_pct: 1.5\n", r"bad.yaml: model.rotary_pct: must be in \(0, 1\]"),
        ("model:\n  name: 7b\n", r"bad.yaml: model.name: unknown size '7b'"),
        ("parallel:\n  tensor_parallel: 3\n", r"bad.yaml: parallel.tensor_parallel: 3 does not divide model.num_heads"),
        ("model:\n  num_heads: 8\n  hidden_size: 128\n  intermediate_size: 500\nparallel:\n  tensor_parallel: 8\n",
         r"bad.yaml: parallel.tensor_parallel: 8 does not divide model.intermediate_size 500"),
        ("parallel:\n  tensor_parallel: 2\n  zero_stage: 0\n", r"bad.yaml: parallel.zero_stage: ZeRO stage 0 with"),
        ("train:\n  micro_batch_size: 4\n  grad_accum: 2\n  global_batch_size: 64\nparallel:\n  data_parallel: 4\n",
         r"bad.yaml: train.global_batch_size: 64 != micro_batch_size 4 x grad_accum 2 x data-parallel size 4 = 32"),
        ("- just\n- a list\n", r"bad.yaml: top level must be a mapping"),
        ("train: [1, 2]\n", r"bad.yaml: train: expected a mapping"),
    ],
)
def test_bad_files_name_file_and_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_bad_override_names_the_command_line():
    with pytest.raises(ConfigError, match=r"^command line: train.lr: expected a number"):
        load_config("tiny.yaml", ["train.lr=fast"])
    with pytest.raises(ConfigError, match=r"^command line: parallel.tensor_parallel: 3 does not divide"):
        load_config("tiny.yaml", ["parallel.tensor_parallel=3"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config("tiny.yaml", ["train.lr"])


def test_a_union_field_takes_the_first_type_that_fits():
    """tokenizer.cross_budget: float | 'auto' | None."""
    assert load_config("tiny.yaml").tokenizer.cross_budget == "auto"
    assert load_config("tiny.yaml", ["tokenizer.cross_budget=0.18"]).tokenizer.cross_budget == 0.18
    assert load_config("tiny.yaml", ["tokenizer.cross_budget=null"]).tokenizer.cross_budget is None
    with pytest.raises(ConfigError, match=r"^command line: tokenizer.cross_budget: expected a number or 'auto' "
                                          r"or null, got str 'most'"):
        load_config("tiny.yaml", ["tokenizer.cross_budget=most"])


def test_world_size_is_checked_against_the_layout():
    cfg = load_config("12.8b.yaml")
    cfg.check(world_size=256)
    with pytest.raises(ConfigError, match="parallel.data_parallel: expects 32 data-parallel ranks, but 64 ranks"):
        cfg.check(world_size=64)
    with pytest.raises(ConfigError, match="does not divide the world size 12"):
        cfg.check(world_size=12)
    derived = load_config("12.8b.yaml", ["parallel.data_parallel=0", "train.grad_accum=0"])
    assert derived.batch_layout(16) == (4, 4, 256)  # accumulation derived from the global batch


def test_resolved_config_round_trips_through_yaml(tmp_path):
    cfg = load_config("5.8b.yaml", ["train.lr=3e-4"])
    path = tmp_path / "resolved.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(str(path)) == cfg


def field_docstrings(cls: type) -> dict[str, bool]:
    """For each annotated field of a dataclass: is it followed by a string literal?"""
    import ast
    import inspect
    import textwrap

    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    documented = {}
    for stmt, nxt in zip(body, [*body[1:], None], strict=True):
        if isinstance(stmt, ast.AnnAssign):
            documented[stmt.target.id] = (
                isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)
            )
    return documented


def test_every_field_is_documented():
    """Each config field carries a docstring line in its dataclass source (shown to users)."""
    seen = set()

    def walk(cls):
        if cls in seen:
            return
        seen.add(cls)
        missing = [name for name, ok in field_docstrings(cls).items() if not ok]
        assert not missing, f"{cls.__name__}: undocumented fields {missing}"
        for f in dataclasses.fields(cls):
            if f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(f.default_factory):
                walk(f.default_factory)

    walk(Config)
    assert len(seen) >= 7  # Config, model, data, clean, tokenizer, train, parallel, logging ...


def test_cli_lists_subcommands_and_prints_sizes():
    run = [sys.executable, "-m", "launch.cli"]
    help_text = subprocess.run([*run, "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("info", "clean", "train-tokenizer", "pack"):
        assert command in help_text
    out = subprocess.run([*run, "info", "12.8b"], capture_output=True, text=True, check=True).stdout
    assert "12,893,603,840" in out
    bad = subprocess.run([*run, "frobnicate"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown command 'frobnicate'" in bad.stderr


# -- error messages, pinned word for word: every stage's loader gives these -----------------

TRAIN_KEYS = ", ".join(f.name for f in dataclasses.fields(TrainConfig))
PII_KEYS = "enabled, rrn, phone, card, account, email, rrn_token, tel_token, acc_token, email_placeholder, context_chars"
KNOWN_FILES = "1.3b.yaml, 12.8b.yaml, 3.8b.yaml, 5.8b.yaml, tiny.yaml"

# (file text, message); {file} is the file's path. The data.clean ones hold for load_clean_config too.
ROOT_MESSAGES = [
    ("train:\n  lrr: 1.0\n", f"{{file}}: train.lrr: unknown key (did you mean train.lr?); valid keys here: {TRAIN_KEYS}"),
    ("train:\n  zzzz: 1\n", f"{{file}}: train.zzzz: unknown key; valid keys here: {TRAIN_KEYS}"),
    ("train:\n  micro_batch_size: four\n", "{file}: train.micro_batch_size: expected an integer, got str 'four'"),
    ("train:\n  compile: 1\n", "{file}: train.compile: expected true or false, got int 1"),
    ("train:\n  precision: fp8\n", "{file}: train.precision: must be one of 'fp32', 'bf16', 'fp16', got 'fp8'"),
    ("train: [1, 2]\n", "{file}: train: expected a mapping, got list [1, 2]"),
    ("model:\n  name: 7b\n", "{file}: model.name: unknown size '7b'; choose from tiny, 1.3b, 3.8b, 5.8b, 12.8b"),
]
SECTION_MESSAGES = [
    ("data:\n  clean:\n    pii:\n      phones: true\n",
     f"{{file}}: data.clean.pii.phones: unknown key (did you mean data.clean.pii.phone?); valid keys here: {PII_KEYS}"),
    ("data:\n  clean:\n    filter:\n      min_chars: many\n",
     "{file}: data.clean.filter.min_chars: expected an integer, got str 'many'"),
    ("data:\n  clean:\n    filter:\n      min_chars: null\n",
     "{file}: data.clean.filter.min_chars: expected an integer, got NoneType None"),
    ("data:\n  clean:\n    filter:\n      max_top_ngram_ratio: [0.2, x]\n",
     "{file}: data.clean.filter.max_top_ngram_ratio[1]: expected a number, got str 'x'"),
    ("data:\n  clean:\n    join:\n      key: 3\n", "{file}: data.clean.join.key: expected a string, got int 3"),
    ("data:\n  clean:\n    pii: true\n", "{file}: data.clean.pii: expected a mapping, got bool True"),
    ("data:\n  clean: [a]\n", "{file}: data.clean: expected a mapping, got list ['a']"),
    ("data: 3\n", "{file}: data: expected a mapping, got int 3"),
    ("data:\n", "{file}: data: expected a mapping, got NoneType None"),
    ("- just\n- a list\n", "{file}: top level must be a mapping of sections, got list"),
]


def message_of(load, *args) -> str:
    with pytest.raises(ConfigError) as caught:
        load(*args)
    return str(caught.value)


@pytest.mark.parametrize("text, message", ROOT_MESSAGES + SECTION_MESSAGES)
def test_file_error_messages(tmp_path, text, message):
    path = write(tmp_path, text)
    assert message_of(load_config, path) == message.format(file=path)


def test_bad_yaml_missing_file_and_override_messages(tmp_path):
    text = "train:\n  lr: [1\n"
    with pytest.raises(yaml.YAMLError) as parse:
        yaml.safe_load(text)
    path = write(tmp_path, text)
    assert message_of(load_config, path) == f"{path}: invalid YAML: {parse.value}"
    assert message_of(load_config, "nope.yaml") == (
        f"nope.yaml: config file not found (looked here and in {CONFIG_DIR}; known: {KNOWN_FILES})"
    )
    for item in ("train.lr", "=3", "--=3"):
        assert message_of(load_config, "tiny.yaml", [item]) == (
            f"command line: {item!r}: overrides are written key=value, e.g. train.lr=1e-4"
        )
    assert message_of(load_config, "tiny.yaml", ["train.lr.x=1"]) == "command line: train.lr.x: lr is not a section"
    assert message_of(load_config, "tiny.yaml", ["data.clean.filter.min_chars=many"]) == (
        "command line: data.clean.filter.min_chars: expected an integer, got str 'many'"
    )
    assert message_of(load_config, "tiny.yaml", ["data.clean.pii=true"]) == (
        "command line: data.clean.pii: expected a mapping, got bool True"
    )
    # A section set as a whole on the command line: errors inside it name the command line.
    assert message_of(load_config, "tiny.yaml", ["data.clean={filter: {min_chars: x}}"]) == (
        "command line: data.clean.filter.min_chars: expected an integer, got str 'x'"
    )


@pytest.mark.parametrize("text, message", SECTION_MESSAGES)
def test_section_loader_gives_the_same_messages(tmp_path, text, message):
    path = write(tmp_path, text)
    assert message_of(load_clean_config, path) == message.format(file=path)


def test_section_loader_file_and_override_messages(tmp_path):
    path = write(tmp_path, "data:\n  clean:\n    filter:\n      min_chars: 7\n  seq_len: many\ntrain: [1]\n")
    assert load_clean_config(path).filter.min_chars == 7  # the other sections are not read
    assert message_of(load_clean_config, "nope.yaml") == message_of(load_config, "nope.yaml")
    text = "data:\n  clean: [1\n"
    assert message_of(load_clean_config, write(tmp_path, text)) == message_of(load_config, write(tmp_path, text))
    for overrides in (["data.clean.filter.min_chars=many"], ["data.clean.pii=true"], ["data.clean"],
                      ["data.clean.filter.min_chars.x=1"], ["data.clean={filter: {min_chars: x}}"]):
        assert message_of(load_clean_config, "tiny.yaml", overrides) == message_of(load_config, "tiny.yaml", overrides)
    assert message_of(load_clean_config, "tiny.yaml", ["train.lr=1e-4"]) == (
        "command line: train.lr: outside data.clean, the only section this stage reads"
    )
    assert message_of(load_clean_config, "tiny.yaml", ["data.cleaner.x=1"]) == (
        "command line: data.cleaner.x: outside data.clean, the only section this stage reads"
    )


def test_section_loader_equals_the_whole_config_section(tmp_path):
    path = write(tmp_path, "data:\n  clean:\n    filter:\n      min_chars: 5\n      max_top_ngram_ratio: [1, 0.5, 0.25]\n"
                           "    join:\n      enabled: true\n      key: movie_id\n")
    overrides = ["data.clean.pii={phone: false}", "data.clean.near_dedup.threshold=7e-1", "data.clean.shard_docs=10"]
    clean = load_clean_config(path, overrides)
    assert clean == load_config(path, overrides).data.clean
    assert clean.filter.max_top_ngram_ratio == [1.0, 0.5, 0.25] and isinstance(clean.filter.max_top_ngram_ratio[0], float)
    assert (clean.join.key, clean.pii.phone, clean.near_dedup.threshold, clean.shard_docs) == ("movie_id", False, 0.7, 10)
    assert load_clean_config("tiny.yaml") == CleanConfig()
    # An override of a section above replaces it whole, as in the root loader.
    whole = ["data={clean: {shard_docs: 10}}"]
    assert load_clean_config(path, whole) == load_config(path, whole).data.clean == CleanConfig(shard_docs=10)
    tok = load_section(TokenizerConfig, "tokenizer", path, ["tokenizer.cross_budget=null", "tokenizer.num_proc=4"])
    assert tok == load_config(path, ["tokenizer.cross_budget=null", "tokenizer.num_proc=4"]).tokenizer
    assert (tok.cross_budget, tok.num_proc) == (None, 4)
    assert message_of(load_section, TokenizerConfig, "tokenizer", path, ["tokenizer.vocab_size=big"]) == (
        "command line: tokenizer.vocab_size: expected an integer, got str 'big'"
    )


NO_TORCH = """
import sys
{body}
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "train", "model"))
assert not heavy, heavy
"""


@pytest.mark.parametrize("body", [
    "import data.clean.config",
    "import data.config",
    "import tokenizer.config",
    "import data.clean.cli\nfrom data.clean import load_clean_config\n"
    "assert load_clean_config('tiny.yaml', ['data.clean.filter.min_chars=5']).filter.min_chars == 5",
    "from launch.cli import main\ntry:\n    main(['clean', '--help'])\nexcept SystemExit:\n    pass",
])
def test_stage_configs_load_without_torch(body):
    """koneox clean starts without torch (2-7 s, and in every forked worker); each config module
    imports on its own, so there is no import circle between them."""
    subprocess.run([sys.executable, "-c", NO_TORCH.format(body=body)], check=True, capture_output=True)
