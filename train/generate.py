"""Generate text with ``transformers``, streaming tokens to the terminal (``koneox generate``).

    koneox generate runs/demo/hf --prompt "대한민국 헌법은" --greedy
    koneox generate runs/demo/train --prompt "..." --temperature 0.8 --top-p 0.95   # a run/checkpoint

A Hugging Face directory (``koneox export`` output) is loaded with ``AutoModelForCausalLM``;
a run or checkpoint is read directly (its weights joined in memory, its tokenizer from the run)
so a checkpoint can be tried without exporting it first.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from train.export import DTYPES, ExportError, hf_model, inference_dtype, open_checkpoint


def load(source: str | Path, device: str = "cpu", dtype: str | None = None, verbose: bool = False
         ) -> tuple[Any, Any]:
    """(model, tokenizer) from an exported directory or a training checkpoint/run, in the dtype
    :func:`train.export.inference_dtype` picks (the training dtype on a GPU, fp32 on a CPU)."""
    import json

    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = Path(source)
    if (source / "config.json").is_file():
        hf = json.loads((source / "config.json").read_text())
        saved = str(hf.get("dtype") or hf.get("torch_dtype") or "float32")
        precision = {"bfloat16": "bf16", "float16": "fp16"}.get(saved, "fp32")
        torch_dtype, why = inference_dtype(device, precision, dtype)
        if verbose:
            print(f"loading {source} in {why}", file=sys.stderr)
        import transformers

        key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
        model = AutoModelForCausalLM.from_pretrained(str(source), **{key: torch_dtype}).to(device).eval()
        return model, AutoTokenizer.from_pretrained(str(source))
    c = open_checkpoint(source)
    if c.tokenizer_path is None:
        raise ExportError(f"{c.path}: the run recorded no tokenizer (tokenizer.path), so prompts cannot be encoded")
    torch_dtype, why = inference_dtype(device, c.precision, dtype)
    if verbose:
        print(f"loading {c.path} in {why}", file=sys.stderr)
    model = hf_model(c, device, torch_dtype)
    tok = AutoTokenizer.from_pretrained(str(c.tokenizer_path))
    model.generation_config.eos_token_id = tok.eos_token_id
    return model, tok


@torch.no_grad()
def generate(
    source: str | Path | tuple[Any, Any],
    prompt: str,
    max_new_tokens: int = 64,
    greedy: bool = False,
    temperature: float = 0.8,
    top_p: float = 0.95,
    seed: int = 0,
    device: str = "cpu",
    stream: bool = True,
    dtype: str | None = None,
) -> str:
    """The continuation of ``prompt`` (without the prompt). Streams prompt + tokens to stdout."""
    from transformers import TextStreamer

    model, tok = source if isinstance(source, tuple) else load(source, device, dtype, verbose=stream)
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False).input_ids.to(device)
    if ids.shape[1] == 0:
        raise ValueError("the prompt is empty after tokenization")
    torch.manual_seed(seed)
    sampling = {} if greedy else {"temperature": temperature, "top_p": top_p, "top_k": 0}
    eos = tok.eos_token_id
    out = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=max_new_tokens,
        do_sample=not greedy,
        eos_token_id=eos,
        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else eos,
        streamer=TextStreamer(tok, skip_special_tokens=True) if stream else None,
        **sampling,
    )
    return tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def add_arguments(parser: Any) -> None:
    parser.add_argument("model", metavar="MODEL_DIR_OR_CHECKPOINT",
                        help="an exported Hugging Face directory, a checkpoint directory or a run directory (latest)")
    parser.add_argument("--prompt", required=True, help="text to continue")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--greedy", action="store_true", help="greedy decoding (default: sampling)")
    parser.add_argument("--temperature", type=float, default=0.8, help="sampling temperature")
    parser.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling threshold")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                        help="weights dtype (default: the training precision on a GPU, fp32 on a CPU)")


def run(args: Any) -> int:
    if args.greedy and (args.temperature != 0.8 or args.top_p != 0.95):
        print("koneox generate: --greedy ignores --temperature and --top-p", file=sys.stderr)
    try:
        generate(args.model, args.prompt, max_new_tokens=args.max_new_tokens, greedy=args.greedy,
                 temperature=args.temperature, top_p=args.top_p, seed=args.seed, device=args.device,
                 dtype=args.dtype)
    except (ExportError, FileNotFoundError, ValueError) as e:
        print(f"koneox generate: {e}", file=sys.stderr)
        return 2
    return 0
