"""Time and peak memory of ``koneox chat-vector`` (one step) against a whole-model-in-RAM version
of the same arithmetic, on three synthetic models of about ``--gb`` GB each, in the same run.

    python benchmarks/chat_vector.py                 # ~1 GB per model, bf16: ~2 min on 2 cores
    python benchmarks/chat_vector.py --gb 0.3 --keep

The models are Llama-shaped (vocabulary 32,000, hidden 2,048, MLP 5,504, as many layers as the
size allows), in bf16, sharded at 500 MB: base random, chat and target the base plus noise.
No tokenizers: only the weights and config.json are read.

Measured, each in a fresh subprocess, each after dropping the files from the page cache
(``posix_fadvise(DONTNEED)`` on every input file, so every run reads from disk):

    disk      plain 16 MB reads of the three input models: the disk's read speed here
    streamed  ``koneox chat-vector --base --chat --target --out`` (python -m launch.cli)
    in-RAM    the three models loaded whole (safetensors ``load_file``), every output tensor
              computed as (target.float() + ratio * (chat.float() - base.float())).to(bf16),
              saved with ``save_file`` shard by shard: what the paper's script does, minus
              transformers model objects

Peak RSS is the child's ``VmHWM`` (its ``ru_maxrss`` would include the RSS this process had when
it forked the child). Target for streamed: peak RSS below 3 x the largest tensor
+ 500 MB, throughput (input bytes read / wall time) near the disk's read speed. The two outputs
are compared tensor by tensor (they must be bit-identical).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MB = 1e6
VOCAB, HIDDEN, MLP = 32000, 2048, 5504
SHARD = 500 * 10**6


def llama_shapes(layers: int) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (VOCAB, HIDDEN)}
    for i in range(layers):
        p = f"model.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            shapes[f"{p}self_attn.{proj}.weight"] = (HIDDEN, HIDDEN)
        shapes[f"{p}mlp.gate_proj.weight"] = (MLP, HIDDEN)
        shapes[f"{p}mlp.up_proj.weight"] = (MLP, HIDDEN)
        shapes[f"{p}mlp.down_proj.weight"] = (HIDDEN, MLP)
        shapes[f"{p}input_layernorm.weight"] = (HIDDEN,)
        shapes[f"{p}post_attention_layernorm.weight"] = (HIDDEN,)
    shapes["model.norm.weight"] = (HIDDEN,)
    shapes["lm_head.weight"] = (VOCAB, HIDDEN)
    return shapes


def layers_for(gb: float) -> int:
    per_layer = 4 * HIDDEN * HIDDEN + 3 * HIDDEN * MLP + 2 * HIDDEN
    return max(1, round((gb * 1e9 / 2 - 2 * VOCAB * HIDDEN) / per_layer))


def config(layers: int) -> dict:
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": VOCAB,
            "hidden_size": HIDDEN, "intermediate_size": MLP, "num_hidden_layers": layers,
            "num_attention_heads": 16, "num_key_value_heads": 16, "tie_word_embeddings": False,
            "rms_norm_eps": 1e-5, "max_position_embeddings": 2048, "dtype": "bfloat16"}


def write_models(root: Path, layers: int) -> dict[str, Path]:
    """base, chat = base + noise, target = base + noise: sharded bf16 safetensors with an index."""
    import torch
    from safetensors.torch import save_file

    dirs = {k: root / k for k in ("base", "chat", "target")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
        (d / "config.json").write_text(json.dumps(config(layers), indent=2))
    shapes = llama_shapes(layers)
    g = torch.Generator().manual_seed(0)
    plan: list[list[str]] = [[]]
    size = 0
    for name, shape in shapes.items():
        nbytes = math.prod(shape) * 2
        if plan[-1] and size + nbytes > SHARD:
            plan.append([])
            size = 0
        plan[-1].append(name)
        size += nbytes
    maps: dict[str, dict[str, str]] = {k: {} for k in dirs}
    for i, names in enumerate(plan, 1):
        fname = f"model-{i:05d}-of-{len(plan):05d}.safetensors"
        shard: dict[str, dict[str, torch.Tensor]] = {k: {} for k in dirs}
        for name in names:
            base = torch.randn(shapes[name], generator=g).mul_(0.02)
            shard["base"][name] = base.to(torch.bfloat16)
            for k in ("chat", "target"):
                shard[k][name] = (base + 0.002 * torch.randn(shapes[name], generator=g)).to(torch.bfloat16)
            del base
        for k, d in dirs.items():
            save_file(shard[k], str(d / fname), metadata={"format": "pt"})
            maps[k].update({n: fname for n in names})
        del shard
    for k, d in dirs.items():
        total = sum(math.prod(s) * 2 for s in shapes.values())
        (d / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": maps[k]}, indent=2))
    return dirs


def drop_cache(dirs: list[Path]) -> None:
    """Evict these directories' files from the page cache, so the next read comes from disk."""
    for d in dirs:
        for f in d.rglob("*"):
            if f.is_file():
                fd = os.open(f, os.O_RDONLY)
                try:
                    os.fsync(fd)
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)


def dir_bytes(d: Path) -> int:
    return sum(f.stat().st_size for f in d.glob("*.safetensors"))


# -- children -------------------------------------------------------------------------------------

RUNNER = """
import json, sys, time
sys.path.insert(0, {repo!r})
start = time.perf_counter()
{body}
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
print(json.dumps({{"seconds": time.perf_counter() - start, "peak_rss": int(hwm.split()[1]) * 1024}}))
"""

STREAMED = """
from launch.cli import main
rc = main(["chat-vector", "--base", {base!r}, "--chat", {chat!r}, "--target", {target!r}, "--out", {out!r}])
assert rc == 0, rc
"""

IN_RAM = """
import json, math
from pathlib import Path
import torch
from safetensors.torch import load_file, save_file

def load(d):
    out = {{}}
    for f in sorted(set(json.loads((Path(d) / "model.safetensors.index.json").read_text())["weight_map"].values())):
        out.update(load_file(str(Path(d) / f)))
    return out

base, chat, target = load({base!r}), load({chat!r}), load({target!r})
merged = {{}}
for name, t in target.items():
    merged[name] = (t.float() + 1.0 * (chat[name].float() - base[name].float())).to(t.dtype)
out = Path({out!r})
out.mkdir(parents=True)
shards, size = [{{}}], 0
for name, t in merged.items():
    if shards[-1] and size + t.numel() * 2 > 2 * 10**9:
        shards.append({{}})
        size = 0
    shards[-1][name] = t
    size += t.numel() * 2
for i, s in enumerate(shards, 1):
    save_file(s, str(out / f"model-{{i:05d}}-of-{{len(shards):05d}}.safetensors"), metadata={{"format": "pt"}})
"""

READ = """
total = 0
for d in {dirs!r}:
    import pathlib
    for f in sorted(pathlib.Path(d).glob("*.safetensors")):
        with open(f, "rb", buffering=0) as fh:
            while chunk := fh.read(16 << 20):
                total += len(chunk)
"""


def run_child(body: str) -> dict:
    code = RUNNER.format(repo=str(REPO), body=body)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if res.returncode != 0:
        raise SystemExit(f"child failed:\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["wall"] = wall
    return out


def identical(a: Path, b: Path) -> bool:
    """Every tensor of the two outputs equal, read one at a time."""
    import torch
    from safetensors import safe_open

    def where(d: Path) -> dict[str, Path]:
        out = {}
        for f in d.glob("*.safetensors"):
            with safe_open(str(f), "pt") as h:
                out.update({k: f for k in h.keys()})  # noqa: SIM118 (safe_open is not a dict)
        return out

    wa, wb = where(a), where(b)
    if wa.keys() != wb.keys():
        return False
    for name in wa:
        with safe_open(str(wa[name]), "pt") as fa, safe_open(str(wb[name]), "pt") as fb:
            if not torch.equal(fa.get_tensor(name), fb.get_tensor(name)):
                return False
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gb", type=float, default=1.0, help="size of each model in GB (bf16)")
    ap.add_argument("--dir", default="/tmp/koneox_chat_vector_bench", help="where the models are written")
    ap.add_argument("--keep", action="store_true", help="keep the models and outputs")
    args = ap.parse_args()

    root = Path(args.dir)
    layers = layers_for(args.gb)
    shapes = llama_shapes(layers)
    model_bytes = sum(math.prod(s) * 2 for s in shapes.values())
    largest = max(math.prod(s) * 2 for s in shapes.values())
    need = 5 * model_bytes * 1.05
    free = shutil.disk_usage(root.parent if not root.exists() else root).free
    if free < need:
        raise SystemExit(f"{root}: {free / 1e9:.1f} GB free, the run needs {need / 1e9:.1f} GB (try --gb smaller)")
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    try:
        t0 = time.perf_counter()
        dirs = write_models(root, layers)
        print(f"models: 3 x {model_bytes / 1e9:.2f} GB (Llama shape, {layers} layers, bf16, "
              f"{len(shapes)} tensors, largest {largest / MB:.0f} MB), written in {time.perf_counter() - t0:.0f} s")
        inputs = [dirs["base"], dirs["chat"], dirs["target"]]
        read_bytes = sum(dir_bytes(d) for d in inputs)

        drop_cache(inputs)
        disk = run_child(READ.format(dirs=[str(d) for d in inputs]))
        paths = {k: str(v) for k, v in dirs.items()}
        drop_cache(inputs)
        streamed = run_child(STREAMED.format(**paths, out=str(root / "out_streamed")))
        drop_cache([*inputs, root / "out_streamed"])
        in_ram = run_child(IN_RAM.format(**paths, out=str(root / "out_in_ram")))
        same = identical(root / "out_streamed", root / "out_in_ram")
        report = json.loads((root / "out_streamed" / "koneox_chat_vector.json").read_text())
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    target_rss = 3 * largest + 500 * MB
    print(f"disk read (cold, 16 MB reads): {read_bytes / 1e9:.2f} GB in {disk['seconds']:.1f} s = "
          f"{read_bytes / MB / disk['seconds']:.0f} MB/s")
    print(f"{'':10} {'wall s':>8} {'peak RSS MB':>12} {'read MB/s':>10}  (input bytes / wall, process start included)")
    for label, r in (("streamed", streamed), ("in-RAM", in_ram)):
        print(f"{label:10} {r['wall']:8.1f} {r['peak_rss'] / MB:12.0f} {read_bytes / MB / r['wall']:10.0f}")
    print(f"streamed / in-RAM: time {streamed['wall'] / in_ram['wall']:.2f}x, "
          f"peak RSS {streamed['peak_rss'] / in_ram['peak_rss']:.2f}x")
    print(f"streamed, inside the command: {report['seconds']:.1f} s, {report['read_mb_per_s']:.0f} MB/s read "
          f"({report['read_mb_per_s'] / (read_bytes / MB / disk['seconds']):.2f}x the disk's read speed)")
    met = streamed["peak_rss"] < target_rss
    print(f"peak RSS target (3 x largest tensor + 500 MB = {target_rss / MB:.0f} MB): "
          f"{'met' if met else 'NOT met'} ({streamed['peak_rss'] / MB:.0f} MB)")
    print(f"outputs bit-identical: {'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
