"""koneox generate on an exported directory: streaming, greedy decoding, sampling options."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from data.testing import read_texts, train_tiny_tokenizer
from model import GPTNeoX, ModelConfig

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "samples" / "nsmc_reviews.jsonl.gz"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer model saved with a small Korean BPE (no training needed)."""
    out = tmp_path_factory.mktemp("hf")
    tok = train_tiny_tokenizer(read_texts(SAMPLE, limit=2000), out, vocab_size=1000)
    from transformers import AutoTokenizer

    eos = AutoTokenizer.from_pretrained(str(tok)).eos_token_id
    model = GPTNeoX(ModelConfig.from_name("tiny", num_layers=2, vocab_size=1000, eos_token_id=eos, bos_token_id=eos))
    model.save_pretrained(str(out))
    return out


def test_greedy_generation_streams_and_equals_argmax_decoding(hf_dir, capsys):
    from transformers import AutoTokenizer

    from train.generate import generate

    prompt = "배우들의 연기가"
    text = generate(hf_dir, prompt, max_new_tokens=10, greedy=True)
    streamed = capsys.readouterr().out
    assert streamed.startswith(prompt) and text.strip() and text.strip() in streamed

    # The same continuation by hand: our model, full forward, argmax, stop at EOS.
    tok = AutoTokenizer.from_pretrained(str(hf_dir))
    model = GPTNeoX.from_pretrained(str(hf_dir)).eval()
    ids = tok(prompt, add_special_tokens=False, return_tensors="pt").input_ids
    n = ids.shape[1]
    with torch.no_grad():
        for _ in range(10):
            nxt = model(ids)[0, -1].argmax()
            ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
            if nxt.item() == tok.eos_token_id:
                break
    assert text == tok.decode(ids[0, n:], skip_special_tokens=True)


def test_sampling_depends_on_the_seed_and_cli_runs(hf_dir, capsys):
    from launch.cli import main
    from train.generate import generate, load

    loaded = load(hf_dir)
    a = generate(loaded, "영화", max_new_tokens=20, temperature=1.0, top_p=1.0, seed=1, stream=False)
    b = generate(loaded, "영화", max_new_tokens=20, temperature=1.0, top_p=1.0, seed=1, stream=False)
    c = generate(loaded, "영화", max_new_tokens=20, temperature=1.0, top_p=1.0, seed=2, stream=False)
    assert a == b and a != c
    assert main(["generate", str(hf_dir), "--prompt", "최고의 영화", "--max-new-tokens", "5", "--greedy"]) == 0
    assert "최고의 영화" in capsys.readouterr().out
    assert main(["generate", str(hf_dir / "missing"), "--prompt", "x"]) == 2


def test_inference_dtype_is_the_training_dtype_on_gpu_and_fp32_on_cpu():
    """select/generate used to build every model in fp32, which does not fit a 12.8B on a 40 GB A100."""
    from train.export import ExportError, inference_dtype

    assert inference_dtype("cuda", "bf16")[0] == torch.bfloat16
    assert inference_dtype("cuda:1", "fp16")[0] == torch.float16
    assert "training precision" in inference_dtype("cuda", "bf16")[1]
    assert inference_dtype("cuda", "fp32")[0] == torch.float32
    assert inference_dtype("cpu", "bf16")[0] == torch.float32
    assert inference_dtype("cuda", "bf16", "fp32")[0] == torch.float32
    assert inference_dtype("cpu", "fp32", "bf16")[0] == torch.bfloat16
    with pytest.raises(ExportError, match="dtype 'int8'"):
        inference_dtype("cpu", "bf16", "int8")


def test_generate_loads_in_the_requested_dtype(hf_dir, capsys):
    from train.generate import generate, load

    model, _ = load(hf_dir, "cpu", "bf16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    text = generate(hf_dir, "배우들의 연기가", max_new_tokens=4, greedy=True, dtype="bf16")
    assert text.strip()
    assert "in bf16 (--dtype)" in capsys.readouterr().err
