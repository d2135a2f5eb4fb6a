"""The demo pipeline on the bundled sample (``bash launch/demo.sh``): every stage as a user runs it.

Each stage is the documented shell command, run in order; outputs go to ``runs/demo/``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "data" / "samples"
KONEOX = [sys.executable, "-m", "launch.cli"]


def banner(title: str) -> None:
    print(f"\n=== {title} " + "=" * max(0, 70 - len(title)), flush=True)


def command(argv: list[str], env: dict[str, str] | None = None) -> None:
    shown = ["koneox", *argv[len(KONEOX):]] if argv[: len(KONEOX)] == KONEOX else argv
    if shown[:3] == [sys.executable, "-m", "deepspeed.launcher.runner"]:
        shown = ["deepspeed", *shown[3:]]
    print("$ " + shlex.join(shown), flush=True)
    start = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, check=True, env={**os.environ, **(env or {})})
    print(f"({time.perf_counter() - start:.1f} s)", flush=True)


def korean_sentence() -> str:
    """The first law text of the sample: real Korean, not made up for the demo."""
    with gzip.open(SAMPLES / "ko_law_bills.jsonl.gz", "rt", encoding="utf-8") as f:
        text = json.loads(f.readline())["text"]
    return " ".join(text.split())[:200]


def model_step() -> None:
    """One forward/backward step of the tiny model. Until a tokenizer exists, the text's UTF-8
    bytes serve as token ids (all below 256, inside the vocabulary)."""
    from model import GPTNeoX, ModelConfig

    text = korean_sentence()
    ids = torch.tensor([list(text.encode("utf-8"))])  # (1, T)
    model = GPTNeoX(ModelConfig.from_name("tiny"))
    logits = model(ids[:, :-1])  # (1, T-1, V)
    loss = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
    loss.backward()
    grad_norm = torch.sqrt(sum(p.grad.pow(2).sum() for p in model.parameters()))
    print(f"text: {text[:60]}...")
    print(f"tokens {ids.shape[1]}, loss {loss.item():.4f} (ln V = {torch.log(torch.tensor(30080.0)):.4f}), "
          f"grad norm {grad_norm:.4f}")


CHAT_TEMPLATE = (
    "{% for m in messages %}<|sep|>{{ m['role'] }}\n{{ m['content'] }}{% endfor %}"
    "{% if add_generation_prompt %}<|sep|>assistant\n{% endif %}"
)


def attach_chat_template(model_dir: Path) -> None:
    """Give the stand-in chat model a chat template, as a chat-tuned model ships one."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(str(model_dir))
    print(f"(chat template attached to {model_dir.relative_to(ROOT)})")


def show_chat_prompt(model_dir: Path) -> None:
    """The merged model carries the chat model's template: format a conversation and generate."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    messages = [{"role": "user", "content": "이 영화 어때요?"}]
    prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    out = model.generate(ids, max_new_tokens=30, do_sample=False, pad_token_id=tok.pad_token_id)
    print(f"prompt from the carried-over template: {prompt!r}")
    print(f"reply of the stand-in merge: {tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)!r}")


def english_stand_in(out_dir: Path) -> None:
    """No English model can be downloaded here. A stand-in for Pythia: a 1,024-entry byte-level BPE
    learned from the English lines of the bundled help pages (Korean falls into bytes) and a 2-layer
    GPT-NeoX trained 150 steps on those lines plus 1% of their bytes in Korean reviews (English web
    data holds a little Korean)."""
    from data.testing import (
        english_help_paragraphs,
        mix_in,
        read_texts,
        train_small_model,
        train_tiny_tokenizer,
    )

    english = english_help_paragraphs(10**9, SAMPLES / "help_pages_ko.jsonl.gz")
    en_bytes = sum(len(t.encode()) for t in english)
    texts, _, size = mix_in(english, read_texts(SAMPLES / "nsmc_reviews.jsonl.gz", limit=2000), 0.01 * en_bytes)
    start = time.perf_counter()
    train_tiny_tokenizer(english, out_dir / "tokenizer", vocab_size=1024)
    train_small_model(out_dir / "tokenizer", texts, out_dir, steps=150, warmup=10)
    print(f"(stand-in English model: {en_bytes:,} bytes of English, {size:,} of "
          f"Korean, 150 steps, {time.perf_counter() - start:.1f} s -> {out_dir.relative_to(ROOT)})", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="runs/demo", help="output directory of the demo")
    parser.add_argument("--train-steps", type=int, default=300, help="optimizer steps of the demo training run")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if (ROOT / out).exists():
        # The demo's own outputs: start fresh, or training would resume from the last run.
        print(f"removing the previous demo outputs in {out}/", flush=True)
        shutil.rmtree(ROOT / out)
    (ROOT / out).mkdir(parents=True)
    start = time.perf_counter()

    banner("1. model sizes (built on the meta device, no memory used)")
    command([*KONEOX, "info"])

    banner("2. tiny model: forward/backward on real Korean text")
    model_step()

    banner("3. clean the bundled sample")
    command([*KONEOX, "clean", *sorted(str(p.relative_to(ROOT)) for p in SAMPLES.glob("*.jsonl.gz")),
             "--out", str(out / "clean"), "--no-progress"])

    banner("4. train the morpheme-aware tokenizer (30,003 tokens)")
    command([*KONEOX, "train-tokenizer", str(out / "clean"), "--out", str(out / "tokenizer")])

    banner("5. tokenize and pack into .bin/.idx")
    command([*KONEOX, "pack", str(out / "clean"), "--tokenizer", str(out / "tokenizer"),
             "--out", str(out / "packed" / "sample"), "--no-progress"])
    # The split / document order / epoch index, built once next to the data and memory-mapped by
    # every training rank (the trainer would build it on rank 0 if it were missing).
    command([*KONEOX, "index", "--config", "tiny.yaml", f"data.train_paths=[{out / 'packed' / 'sample'}]"])

    banner("6. train the tiny model with DeepSpeed: 2 CPU ranks, tensor parallel 2")
    env_note = "DS_ACCELERATOR=cpu OMP_NUM_THREADS=1"
    print(f"(environment: {env_note})")
    train_cmd = [
        sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "2", "launch/train.py",
        "--config", "tiny.yaml", "parallel.tensor_parallel=2", f"data.train_paths=[{out / 'packed' / 'sample'}]",
        f"tokenizer.path={out / 'tokenizer'}", f"train.run_dir={out / 'train'}", f"train.train_steps={args.train_steps}",
        "train.micro_batch_size=4",
        "logging.wandb.mode=offline",
    ]
    command(train_cmd, env={"DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"})

    banner("7. plan the 12.8B on 32 nodes x 8 A100-80G and render its Slurm job (not submitted)")
    command([*KONEOX, "plan", "--config", "12.8b.yaml", "--nodes", "32", "--gpus-per-node", "8",
             "--gpu", "a100-80g"])
    command([*KONEOX, "slurm", "--config", "12.8b.yaml", "--nodes", "32", "--time", "2-00:00:00",
             "--out", str(out / "train-12.8b.sbatch"), f"train.run_dir={out / 'runs-12.8b'}"])

    banner("8. pick a checkpoint: held-out loss, bits per byte, degeneration, KoBEST 0-shot")
    # KoBEST on the first 100 dev examples of each task per checkpoint (about 15 s each on one
    # CPU core; all 2,710 take about 70 s); stage 10 evaluates the chosen one on all of them.
    command([*KONEOX, "select", str(out / "train"), "--kobest", "--kobest-limit", "100"],
            env={"OMP_NUM_THREADS": "1"})
    print((ROOT / out / "train" / "selection.md").read_text(encoding="utf-8"))

    banner("9. export the recommended checkpoint to Hugging Face format")
    command([*KONEOX, "export", str(out / "train"), "--recommended", "--out", str(out / "hf")])

    banner("10. evaluate the export on KoBEST (bundled dev splits, 0-shot)")
    # The command prints results.md; results.json and per-example predictions go to --out.
    command([*KONEOX, "eval", str(out / "hf"), "--tasks", "kobest", "--shots", "0", "--data",
             str((SAMPLES / "kobest").relative_to(ROOT)), "--split", "dev", "--out", str(out / "eval"), "--quiet"],
            env={"OMP_NUM_THREADS": "1"})

    banner("11. generate a Korean continuation with transformers")
    command([*KONEOX, "generate", str(out / "hf"), "--prompt", "이 영화 정말", "--greedy", "--max-new-tokens", "40"])

    banner("12. Chat Vector: target + (chat - base), streamed tensor by tensor (stand-in models)")
    # No chat model can be downloaded here, so checkpoints of the demo run stand in: base = the
    # first, "chat" = the second with a chat template attached, target = the export of stage 9.
    # The arithmetic, the files and the carried-over template are what a real base/chat pair gets.
    first, second = sorted((ROOT / out / "train" / "checkpoints").glob("step*"))[:2]
    command([*KONEOX, "export", str(first.relative_to(ROOT)), "--out", str(out / "cv" / "base")])
    command([*KONEOX, "export", str(second.relative_to(ROOT)), "--out", str(out / "cv" / "chat")])
    attach_chat_template(ROOT / out / "cv" / "chat")
    command([*KONEOX, "chat-vector", "--base", str(out / "cv" / "base"), "--chat", str(out / "cv" / "chat"),
             "--target", str(out / "hf"), "--out", str(out / "hf-chat")])
    show_chat_prompt(ROOT / out / "hf-chat")

    banner("13. adapt an English model: Korean tokens, then stage 1 (stand-in English model)")
    ext = out / "extend"
    english_stand_in(ROOT / ext / "english")
    law = str((SAMPLES / "ko_law_bills.jsonl.gz").relative_to(ROOT))
    command([*KONEOX, "extend-vocab", "--model", str(ext / "english"), "--add-tokens", str(out / "tokenizer"),
             "--out", str(ext / "base"), "--eval-text", law, "--bpb"], env={"OMP_NUM_THREADS": "1"})
    command([*KONEOX, "pack", str(out / "clean"), "--tokenizer", str(ext / "base"), "--out", str(ext / "packed"),
             "--no-progress"])
    # configs/extend/stage1.yaml as shipped (new input rows only, freeze_embedding_rows_below: auto),
    # scaled down to the CPU; stages 2 and 3 are the same command with extend/stage{2,3}.yaml.
    command([sys.executable, "launch/train.py", "--config", "extend/stage1.yaml", f"model.init_from={ext / 'base'}",
             f"data.train_paths=[{ext / 'packed'}]", f"train.run_dir={ext / 'stage1'}", "data.seq_len=128",
             "train.micro_batch_size=8", "train.global_batch_size=8", "train.train_steps=60", "train.warmup_steps=5",
             "train.save_interval=60", "train.eval_interval=0", "train.log_interval=20", "train.precision=fp32",
             "logging.wandb.mode=offline"], env={"DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"})
    command([*KONEOX, "export", str(ext / "stage1"), "--out", str(ext / "stage1-hf")])
    # The law bills are in the packed data too: this shows the stage moving, it is not a held-out score.
    command([*KONEOX, "eval", str(ext / "stage1-hf"), "--bpb", law], env={"OMP_NUM_THREADS": "1"})

    print(f"\ndemo finished in {time.perf_counter() - start:.0f} s; outputs in {out}/", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
