"""No special-token injection: literal special strings in raw text never become special ids.

Real reviews from ``data/samples`` carry every special string the cleaner knows (attached to
Hangul, repeated, split by characters that earlier steps remove, nested, across joined
documents) plus real phone numbers and resident numbers. Cleaned, they hold no special string
but the pii step's placeholders; packed with a koneox-layout tokenizer (the trainer's own BPE
code, specials at ids 0-3 and the PII placeholders last), every document has exactly one
special id that is not a placeholder: its final ``<|endoftext|>``. The same holds for text
packed without cleaning, where a typed placeholder becomes the placeholder id (documented).
"""

from __future__ import annotations

import gzip
import itertools
import json
import re
import signal
from collections import Counter
from pathlib import Path

import pytest

from data.clean import CleanConfig, CleanInterrupted, clean_files, escape_special_tokens, load_clean_config
from data.clean import output as clean_output
from data.clean.specials import NAMED
from data.indexed import IndexedDataset
from data.pack import PII_PLACEHOLDERS, PackError, load_tokenizer, pack, pack_per_shard
from data.testing import read_texts

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"
LEARNED = 1000  # learned entries of the test tokenizer: placeholders get ids 1000-1002
SPECIAL_IDS = {0, 1, 2, 3}  # <|bos|> <|pad|> <|endoftext|> <|sep|>
EOS = 2
PLACEHOLDER_IDS = {"<|acc|>": LEARNED, "<|tel|>": LEARNED + 1, "<|rrn|>": LEARNED + 2}
_PLACEHOLDER = re.compile("|".join(re.escape(p) for p in PLACEHOLDER_IDS))
# the pii step's types behind each placeholder
_PII_OF = {"<|acc|>": ("card", "account"), "<|tel|>": ("phone",), "<|rrn|>": ("rrn",)}


@pytest.fixture(scope="module")
def reviews() -> list[str]:
    """Real reviews with nothing the cleaner would change or mask on its own."""
    texts = read_texts(SAMPLES / "nsmc_reviews.jsonl.gz")
    plain = re.compile(r"^[\uac00-\ud7a3 .,!?]{15,}$")
    keep = [t for t in texts if plain.match(t) and "  " not in t and not re.search(r"(.)\1\1", t)]
    return list(dict.fromkeys(keep))  # no review twice: documents built from them stay distinct


@pytest.fixture(scope="module")
def injected(reviews: list[str]) -> tuple[list[str], Counter]:
    """Documents with literal special strings, and how many of each the cleaner must escape."""
    r = iter(reviews)
    docs: list[str] = []
    want: Counter = Counter()
    for s in NAMED:  # every named string, attached to Hangul on both sides
        docs.append(f"{next(r)} {next(r)}{s}{next(r)}")
        want[s] += 1
    for s, label in (
        ("<|im_sep|>", "<|…|>"),
        ("<｜begin▁of▁sentence｜>", "<|…|>"),
        ("<extra_id_7>", "<extra_id_N>"),
        ("[unused12]", "[unusedN]"),
        ("<unused3>", "<unusedN>"),
    ):
        docs.append(f"{next(r)} {next(r)}{s}{next(r)}")
        want[label] += 1
    docs.append(f"{next(r)}<|endoftext|><|endoftext|><|endoftext|><|endoftext|><|endoftext|>{next(r)}")
    want["<|endoftext|>"] += 5
    docs.append(f"{next(r)} <|tel|><|tel|> {next(r)} <|tel|>{next(r)}")
    want["<|tel|>"] += 3
    # split by what the unicode, markup and html steps remove or unescape
    docs.append(f"{next(r)} {next(r)}<|end\u200boftext|>{next(r)}")
    docs.append(f"{next(r)} {next(r)}<|end<!-- 주석 -->oftext|>{next(r)}")
    docs.append(f"{next(r)} {next(r)} &lt;|tel|&gt; {next(r)}")
    want.update({"<|endoftext|>": 2, "<|tel|>": 1})
    # nested and overlapping
    docs.append(f"{next(r)} {next(r)}<|<|tel|>|>{next(r)}")
    docs.append(f"{next(r)} {next(r)}<|[CLS]|>{next(r)}")
    docs.append(f"{next(r)} {next(r)}<<|endoftext|>|>{next(r)}")
    want.update({"<|tel|>": 1, "<|…|>": 1, "[CLS]": 1, "<|endoftext|>": 1})
    # real PII next to fake placeholders: only the masked numbers may become placeholders
    docs.append(f"{next(r)} 연락처는 010-2345-6789 입니다 <|tel|> {next(r)}")
    docs.append(f"{next(r)} 주민등록번호 900101-1234567 <|rrn|><|acc|> {next(r)}")
    want.update({"<|tel|>": 1, "<|rrn|>": 1, "<|acc|>": 1})
    docs.append(f"{next(r)} 전화 02-123-4567 {next(r)}")
    docs += [f"{next(r)} {next(r)}" for _ in range(20)]  # and ordinary documents
    return docs, want


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory: pytest.TempPathFactory, reviews: list[str], injected) -> Path:
    """The trainer's BPE and layout, learned on text full of literal special strings."""
    from tokenizer.train import _finish, _learn, save_hf

    docs, _ = injected
    tok = _finish(_learn(reviews[:3000] + docs * 20, LEARNED, split_points=False))
    out = tmp_path_factory.mktemp("tok")
    save_hf(tok, out)
    return out


def _write(docs: list[str], path: Path, **fields) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"text": d, **fields}, ensure_ascii=False) + "\n")
    return path


def _texts(out: Path) -> list[str]:
    docs = []
    for shard in sorted(out.glob("part-*.jsonl.gz")):
        with gzip.open(shard, "rt", encoding="utf-8") as f:
            docs += [json.loads(line)["text"] for line in f]
    return docs


@pytest.fixture(scope="module")
def cleaned(tmp_path_factory: pytest.TempPathFactory, injected) -> tuple[Path, dict]:
    docs, _ = injected
    work = tmp_path_factory.mktemp("clean")
    report = clean_files([_write(docs, work / "raw.jsonl.gz")], work / "out", num_proc=1)
    return work / "out", report


def _check_packed(prefix: Path, texts: list[str], tok_dir: Path) -> Counter:
    """Every document: its text back, one EOS at the end, no other special id; the placeholder
    ids exactly where its text has a placeholder. Returns the placeholder ids by string."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    ds = IndexedDataset(prefix)
    assert ds.num_documents == len(texts)
    found: Counter = Counter()
    for i, text in enumerate(texts):
        ids = ds.document(i).tolist()
        assert ids[-1] == EOS, text
        body = ids[:-1]
        assert not SPECIAL_IDS & set(body), text
        assert [x for x in body if x >= LEARNED] == [PLACEHOLDER_IDS[p] for p in _PLACEHOLDER.findall(text)]
        assert tok.decode(body, skip_special_tokens=False) == text
        found.update(p for p in _PLACEHOLDER.findall(text))
    return found


def test_tokenizer_layout_survives_literal_specials_in_training_text(tok_dir: Path) -> None:
    """Training text full of literal specials: ByteLevel's pre-tokenizer splits ``<|`` from
    the name, so no learned token holds a whole special string and the ids stay in place."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    assert tok.get_vocab_size() == LEARNED + 3
    assert [tok.id_to_token(i) for i in range(4)] == ["<|bos|>", "<|pad|>", "<|endoftext|>", "<|sep|>"]
    assert {p: tok.token_to_id(p) for p in PLACEHOLDER_IDS} == PLACEHOLDER_IDS
    learned = [t for t, i in tok.get_vocab(with_added_tokens=False).items() if i >= 4]
    decoded = [tok.decode([tok.token_to_id(t)]) for t in learned]
    assert not [t for t in decoded if escape_special_tokens(t)[1]]
    assert "<|" in decoded and "|>" in decoded  # it did see them: the pieces were learned


def test_cleaner_escapes_every_literal_special_string(cleaned, injected) -> None:
    out, report = cleaned
    docs, want = injected
    assert report["kept"] == report["documents_in"] == len(docs) and report["accounting_holds"]
    assert report["special_tokens"] == dict(sorted(want.items()))
    assert report["pii"]["phone"] == 2 and report["pii"]["rrn"] == 1
    texts = _texts(out)
    # what is left is exactly the pii step's placeholders, one per masked number
    left = Counter()
    for text in texts:
        left.update(escape_special_tokens(text)[1])
    assert left == Counter({p: sum(report["pii"][k] for k in _PII_OF[p]) for p in _PII_OF}) - Counter()
    assert "< |endoftext|>" in texts[NAMED.index("<|endoftext|>")]
    assert any("<|< |tel|>|>" in t for t in texts) and any("< |[ CLS]|>" in t for t in texts)
    md = (out / "report.md").read_text()
    assert "## Special-token strings escaped" in md and "| `<\\|endoftext\\|>` | 9 |" in md


def test_pack_of_cleaned_text_has_only_placeholders_and_the_final_eos(cleaned, tok_dir, tmp_path) -> None:
    out, report = cleaned
    rep = pack([out], tok_dir, tmp_path / "p", num_proc=2, progress=False)
    assert rep["kept_added_tokens"] == list(PII_PLACEHOLDERS)
    assert rep["split_added_tokens"] == sorted(["<|bos|>", "<|pad|>", "<|endoftext|>", "<|sep|>"])
    found = _check_packed(tmp_path / "p", _texts(out), tok_dir)
    assert found == Counter({p: sum(report["pii"][k] for k in _PII_OF[p]) for p in _PII_OF}) - Counter()


def test_pack_of_uncleaned_text_splits_every_special_but_placeholders(injected, tok_dir, tmp_path) -> None:
    """Text that never went through the cleaner: specials become ordinary tokens; a typed
    placeholder cannot be told from a written one and becomes the placeholder id."""
    docs, _ = injected
    raw = _write(docs, tmp_path / "raw.jsonl.gz")
    pack([raw], tok_dir, tmp_path / "p1", num_proc=1, progress=False)
    found = _check_packed(tmp_path / "p1", docs, tok_dir)
    assert found["<|tel|>"] == sum(d.count("<|tel|>") for d in docs) > 0
    pack([raw], tok_dir, tmp_path / "p2", num_proc=2, progress=False)
    for ext in (".bin", ".idx"):
        assert Path(f"{tmp_path / 'p1'}{ext}").read_bytes() == Path(f"{tmp_path / 'p2'}{ext}").read_bytes()


def test_without_either_guard_specials_get_through(injected, tok_dir, tmp_path) -> None:
    """What the two guards stop: without the cleaner's step fake placeholders become placeholder
    ids; without pack's splitting a literal ``<|endoftext|>`` becomes the EOS id."""
    from tokenizers import Tokenizer

    docs, _ = injected
    steps = [s for s in CleanConfig().enabled_steps() if s != "special_tokens"]
    report = clean_files([_write(docs, tmp_path / "raw.jsonl.gz")], tmp_path / "c", steps=steps)
    assert "special_tokens" not in report["steps"] and report["special_tokens"] == {}
    texts = _texts(tmp_path / "c")
    pack([tmp_path / "c"], tok_dir, tmp_path / "p", progress=False)
    found = _check_packed(tmp_path / "p", texts, tok_dir)
    assert found["<|tel|>"] > report["pii"]["phone"]
    plain = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    assert any(EOS in plain.encode(t, add_special_tokens=False).ids for t in texts)
    split, _ = load_tokenizer(tok_dir)
    assert not any(EOS in split.encode(t, add_special_tokens=False).ids for t in texts)


def test_a_string_completed_by_join_is_escaped(reviews, tmp_path) -> None:
    cfg = CleanConfig()
    cfg.join.enabled, cfg.join.key, cfg.join.separator = True, "thread", ""
    docs = [f"{reviews[0]}<|end", f"oftext|>{reviews[1]}", f"{reviews[2]}<|t", f"el|>{reviews[3]}"]
    report = clean_files([_write(docs, tmp_path / "raw.jsonl.gz", thread=1)], tmp_path / "out", cfg)
    assert report["output_documents"] == 1 and report["special_tokens"] == {"<|endoftext|>": 1, "<|tel|>": 1}
    assert _texts(tmp_path / "out") == [f"{reviews[0]}< |endoftext|>{reviews[1]}{reviews[2]}< |tel|>{reviews[3]}"]


def test_counts_and_bytes_do_not_depend_on_num_proc_or_a_resume(injected, tmp_path, monkeypatch) -> None:
    docs, want = injected
    raw = _write(docs * 3, tmp_path / "raw.jsonl.gz")  # copies are dropped by dedup, not counted
    cfg = CleanConfig(shard_docs=9, chunk_docs=7)
    one = clean_files([raw], tmp_path / "one", cfg, num_proc=1)
    two = clean_files([raw], tmp_path / "two", cfg, num_proc=2)
    assert one["special_tokens"] == two["special_tokens"] == dict(sorted(want.items()))
    assert len(one["shards"]) >= 4
    for name in one["shards"]:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()

    original = clean_output.write_text_atomic

    def stop_after_second_shard(path: Path, text: str) -> None:
        original(path, text)
        if Path(path).name == clean_output.progress_name(1):
            raise CleanInterrupted(signal.SIGTERM)

    with monkeypatch.context() as m:
        m.setattr(clean_output, "write_text_atomic", stop_after_second_shard)
        with pytest.raises(CleanInterrupted, match="2 complete shard"):
            clean_files([raw], tmp_path / "resumed", cfg)
    logged: list[str] = []
    resumed = clean_files([raw], tmp_path / "resumed", cfg, num_proc=2, log=logged.append)
    assert logged[0].startswith("resuming after 2 complete shard(s)")
    assert resumed["special_tokens"] == one["special_tokens"]
    for name in one["shards"]:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "resumed" / name).read_bytes()


def test_recleaning_escapes_the_earlier_placeholders(cleaned, tmp_path) -> None:
    """Output cleaned again: its placeholders cannot be told from typed ones and are escaped
    (nothing else is counted twice); without the step the text keeps them."""
    out, first = cleaned
    shards = sorted(out.glob("part-*.jsonl.gz"))
    again = clean_files(shards, tmp_path / "again")
    written = {p: sum(first["pii"][k] for k in _PII_OF[p]) for p in _PII_OF}
    assert again["special_tokens"] == {p: n for p, n in sorted(written.items()) if n}
    steps = [s for s in CleanConfig().enabled_steps() if s != "special_tokens"]
    kept = clean_files(shards, tmp_path / "kept", steps=steps)
    assert kept["special_tokens"] == {} and _texts(tmp_path / "kept") == _texts(out)


def test_extra_strings_config_and_bad_values(reviews, tmp_path) -> None:
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("data:\n  clean:\n    special_tokens:\n      extra: ['[TEL]', '<|user|>']\n")
    cfg = load_clean_config(cfg_file)
    assert cfg.special_tokens.extra == ["[TEL]", "<|user|>"] and cfg.special_tokens.enabled
    text = f"{reviews[0]}[TEL]{reviews[1]}<|user|>{reviews[2]}"
    report = clean_files([_write([text], tmp_path / "raw.jsonl.gz")], tmp_path / "out", cfg)
    assert report["special_tokens"] == {"<|user|>": 1, "[TEL]": 1}
    assert _texts(tmp_path / "out") == [f"{reviews[0]}[ TEL]{reviews[1]}< |user|>{reviews[2]}"]
    cfg.special_tokens.extra = ["[전화 번호]"]
    with pytest.raises(ValueError, match=r"special_tokens\.extra\[0\]"):
        clean_files([tmp_path / "raw.jsonl.gz"], tmp_path / "bad", cfg)


def test_escaping_is_idempotent_and_leaves_no_special_string() -> None:
    cases = ["".join(p) for p in itertools.product(["<|", "<", "|", "endoftext", "tel", "|>", ">", "[CLS]"], repeat=3)]
    for text in cases + ["<|<|<|tel|>|>|>", "<<<s>>>", "[[CLS]]", "<|[SEP]|><</SYS>>"]:
        escaped, counts = escape_special_tokens(text)
        assert escape_special_tokens(escaped) == (escaped, Counter()), text
        assert escaped.replace(" ", "") == text.replace(" ", "")
        assert sum(counts.values()) == escaped.count(" ") - text.count(" ")


def test_pack_refuses_a_model_that_makes_special_ids_from_text(tok_dir, tmp_path) -> None:
    """The split guarantee is checked on the ids. A BPE with ``ignore_merges`` (as in Llama 3)
    maps a pre-token found whole in its vocabulary straight to its id; without the GPT-2 regex
    a document ``<|sep|>`` is one pre-token, and the specials are in the model's vocabulary."""
    state = json.loads((tok_dir / "tokenizer.json").read_text())
    state["pre_tokenizer"]["use_regex"] = False
    state["model"]["ignore_merges"] = True
    bad = tmp_path / "tok"
    bad.mkdir()
    (bad / "tokenizer.json").write_text(json.dumps(state))
    docs = ["문서 하나", "<|sep|>"]
    with pytest.raises(PackError, match=r"raw\.jsonl\.gz:2: the text encoded to special token id 3 \('<\|sep\|>'\)"):
        pack([_write(docs, tmp_path / "raw.jsonl.gz")], bad, tmp_path / "p", progress=False)


def test_placeholders_agree_across_stages() -> None:
    from tokenizer.train import PII_TOKENS

    pii = CleanConfig().pii
    assert list(PII_PLACEHOLDERS) == PII_TOKENS == [pii.acc_token, pii.tel_token, pii.rrn_token]


def test_per_shard_pack_redoes_shards_packed_before_specials_were_split(cleaned, tok_dir, tmp_path) -> None:
    out, _ = cleaned
    first = pack_per_shard([out], tok_dir, tmp_path / "ps", progress=False)
    assert first["packed"] == 1 and first["kept_added_tokens"] == list(PII_PLACEHOLDERS)
    assert pack_per_shard([out], tok_dir, tmp_path / "ps", progress=False)["skipped"] == 1
    sidecar = tmp_path / "ps" / "part-00000.stats.json"
    stats = json.loads(sidecar.read_text())
    del stats["kept_added_tokens"]  # as the packer wrote it before this change
    sidecar.write_text(json.dumps(stats))
    again = pack_per_shard([out], tok_dir, tmp_path / "ps", progress=False)
    assert again["packed"] == 1 and again["skipped"] == 0
