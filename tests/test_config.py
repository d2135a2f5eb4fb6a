"""Typed configs: YAML over defaults, dotted overrides, errors that name file and key."""

from __future__ import annotations

import subprocess
import sys

import pytest

from train.config import Config, ConfigError, load_config

SIZES = {"1.3b": 1_331_810_304, "3.8b": 3_809_974_272, "5.8b": 5_885_059_072, "12.8b": 12_893_603_840}


@pytest.mark.parametrize("name", ["tiny.yaml", *[f"{s}.yaml" for s in SIZES]])
def test_every_shipped_config_loads(name):
    cfg = load_config(name)
    assert isinstance(cfg, Config)
    if name != "tiny.yaml":
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
    import dataclasses

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
