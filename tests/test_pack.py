"""Packing real Korean text into Megatron .bin/.idx: round trip, format, merge, bad input."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from data.indexed import IndexedDataset, IndexedDatasetError, IndexedDatasetWriter, best_dtype, merge
from data.pack import PackError, pack
from data.stage import mark_complete
from data.testing import EOS, corpus_dir, read_texts, train_tiny_tokenizer, write_jsonl_gz

CORPUS = corpus_dir()
pytestmark = pytest.mark.skipif(not (CORPUS / "raw").is_dir(), reason=f"shared corpus not found at {CORPUS}")

_DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 8: np.uint16}


def read_megatron(prefix: Path) -> dict:
    """Independent reader of the Megatron format, written from the spec (REFERENCE §4) with struct."""
    raw = Path(f"{prefix}.idx").read_bytes()
    magic, version, code, n_seq, n_doc = struct.unpack_from("<9sQBQQ", raw, 0)
    assert magic == b"MMIDIDX\x00\x00" and version == 1
    off = 9 + 8 + 1 + 8 + 8
    lengths = struct.unpack_from(f"<{n_seq}i", raw, off)
    off += 4 * n_seq
    pointers = struct.unpack_from(f"<{n_seq}q", raw, off)
    off += 8 * n_seq
    doc_index = struct.unpack_from(f"<{n_doc}q", raw, off)
    dtype = np.dtype(_DTYPES[code]).newbyteorder("<")
    data = Path(f"{prefix}.bin").read_bytes()
    seqs = [
        np.frombuffer(data, dtype=dtype, count=n, offset=p) for n, p in zip(lengths, pointers, strict=True)
    ]
    docs = [np.concatenate(seqs[a:b]) for a, b in zip(doc_index[:-1], doc_index[1:], strict=True)]
    return {"dtype": dtype, "lengths": lengths, "pointers": pointers, "doc_index": doc_index, "docs": docs}


@pytest.fixture(scope="module")
def texts() -> dict[str, list[str]]:
    raw = CORPUS / "raw"
    return {
        "reviews": read_texts(raw / "nsmc_reviews.jsonl.gz", limit=3000),
        "law": read_texts(raw / "ko_law_bills.jsonl.gz"),
        "help": read_texts(raw / "gimp_help_ko.jsonl.gz", limit=60),
    }


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory, texts) -> Path:
    return train_tiny_tokenizer(
        texts["reviews"] + texts["law"], tmp_path_factory.mktemp("tok"), vocab_size=2000
    )


@pytest.fixture(scope="module")
def packed(tmp_path_factory, texts, tok_dir) -> tuple[Path, list[str], dict]:
    d = tmp_path_factory.mktemp("packed")
    docs = texts["reviews"] + texts["law"] + texts["help"]
    src = write_jsonl_gz(docs, d / "in" / "part-00000.jsonl.gz")
    mark_complete(src.parent, "koneox clean", {"shards": [src.name]})  # as a finished clean leaves it
    report = pack([src], tok_dir, d / "all", num_proc=2, progress=False)
    return d / "all", docs, report


def test_every_document_decodes_back_to_its_text_plus_eos(packed, tok_dir):
    from transformers import AutoTokenizer

    prefix, docs, report = packed
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    ref = read_megatron(prefix)
    assert len(ref["docs"]) == len(docs) == report["documents"]
    for text, ids in zip(docs, ref["docs"], strict=True):
        assert int(ids[-1]) == tok.eos_token_id
        assert tok.decode(ids.tolist()) == text + EOS
    # newline is a token like any other: multi-line law/help text keeps its structure
    assert any("\n" in t for t in docs)


def test_report_describes_the_files(packed):
    prefix, docs, report = packed
    on_disk = json.loads(Path(f"{prefix}.report.json").read_text(encoding="utf-8"))
    assert on_disk == report
    ref = read_megatron(prefix)
    assert report["dtype"] == "uint16" and ref["dtype"] == np.dtype("<u2")
    assert report["tokens"] == sum(ref["lengths"]) == Path(f"{prefix}.bin").stat().st_size // 2
    assert report["text_bytes"] == sum(len(t.encode()) for t in docs)
    assert report["bytes_per_token"] == pytest.approx(
        report["text_bytes"] / (report["tokens"] - len(docs)), rel=1e-3
    )
    assert report["tokens_per_second"] > 0


def test_independent_reader_agrees_with_indexed_dataset(packed):
    prefix, docs, _ = packed
    ref = read_megatron(prefix)
    ds = IndexedDataset(prefix, vocab_size=2000)
    assert ds.num_documents == len(docs) and ds.num_sequences == len(ref["lengths"])
    assert list(ds.lengths) == list(ref["lengths"])
    assert list(ds.pointers) == list(ref["pointers"])
    assert list(ds.doc_index) == list(ref["doc_index"]) == list(range(len(docs) + 1))
    for i in range(0, len(docs), 97):
        np.testing.assert_array_equal(ds.document(i), ref["docs"][i])
        np.testing.assert_array_equal(ds[i], ref["docs"][i])


def test_output_does_not_depend_on_num_proc_and_inputs_can_be_a_directory(packed, tok_dir, tmp_path):
    prefix, _, _ = packed
    # a cleaner output directory may also hold its rejected documents: they must not be packed
    write_jsonl_gz(["버려진 문서"], prefix.parent / "in" / "rejects-00000.jsonl.gz")
    # part-*.jsonl.gz marks it as `koneox clean` output: packed only once marked complete
    mark_complete(prefix.parent / "in", "koneox clean")
    pack([prefix.parent / "in"], tok_dir, tmp_path / "one", num_proc=1, progress=False)
    for ext in (".bin", ".idx"):
        assert Path(f"{tmp_path / 'one'}{ext}").read_bytes() == Path(f"{prefix}{ext}").read_bytes()


def test_jsonl_txt_and_parquet_inputs(texts, tok_dir, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = texts["law"][:4]
    (tmp_path / "a.jsonl").write_text(
        "".join(json.dumps({"text": t}) + "\n" for t in docs[:2]), encoding="utf-8"
    )
    (tmp_path / "b.txt").write_text(docs[2], encoding="utf-8")
    pq.write_table(pa.table({"text": docs[3:]}), tmp_path / "c.parquet")
    rep = pack(
        [tmp_path / "a.jsonl", tmp_path / "b.txt", tmp_path / "c.parquet"],
        tok_dir,
        tmp_path / "mix",
        progress=False,
    )
    assert rep["documents"] == 4
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    ds = IndexedDataset(tmp_path / "mix")
    assert [tok.decode(ds.document(i).tolist(), skip_special_tokens=False) for i in range(4)] == [
        t + EOS for t in docs
    ]


def test_merge_keeps_every_document_boundary(texts, tok_dir, tmp_path):
    a, b = texts["reviews"][:500], texts["law"]
    pack([write_jsonl_gz(a, tmp_path / "a.jsonl.gz")], tok_dir, tmp_path / "a", progress=False)
    pack([write_jsonl_gz(b, tmp_path / "b.jsonl.gz")], tok_dir, tmp_path / "b", progress=False)
    pack([tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz"], tok_dir, tmp_path / "ab_direct", progress=False)
    rep = merge([tmp_path / "a", tmp_path / "b"], tmp_path / "ab")
    assert rep["documents"] == len(a) + len(b)
    ref = read_megatron(tmp_path / "ab")
    assert len(ref["docs"]) == len(a) + len(b)
    for ext in (".bin", ".idx"):
        assert (
            Path(f"{tmp_path / 'ab'}{ext}").read_bytes()
            == Path(f"{tmp_path / 'ab_direct'}{ext}").read_bytes()
        )


def _write_megatron_style(
    prefix: Path, docs: list[list[np.ndarray]], code: int = 8, modes: bool = False
) -> None:
    """A file as Megatron-LM writes it for sentence-split data: several sequences per document."""
    dtype = np.dtype(_DTYPES[code])
    seqs = [s for d in docs for s in d]
    lengths = np.array([len(s) for s in seqs], dtype=np.int32)
    pointers = np.concatenate(([0], np.cumsum(lengths[:-1].astype(np.int64) * dtype.itemsize)))
    doc_index = np.concatenate(([0], np.cumsum([len(d) for d in docs]))).astype(np.int64)
    with open(f"{prefix}.idx", "wb") as f:
        f.write(b"MMIDIDX\x00\x00" + struct.pack("<Q", 1) + struct.pack("<B", code))
        f.write(struct.pack("<Q", len(seqs)) + struct.pack("<Q", len(doc_index)))
        f.write(lengths.tobytes() + pointers.astype("<i8").tobytes() + doc_index.tobytes())
        if modes:
            f.write(np.zeros(len(seqs), dtype=np.int8).tobytes())
    Path(f"{prefix}.bin").write_bytes(b"".join(s.astype(dtype).tobytes() for s in seqs))


def test_reads_megatron_sentence_split_and_multimodal_files(packed, tmp_path):
    prefix, _, _ = packed
    ours = IndexedDataset(prefix)
    # split each of our documents into two "sentences", as Megatron's --split-sentences output
    docs = [
        [ours.document(i)[: len(ours.document(i)) // 2], ours.document(i)[len(ours.document(i)) // 2 :]]
        for i in range(50)
    ]
    _write_megatron_style(tmp_path / "meg", docs, code=4, modes=True)
    ds = IndexedDataset(tmp_path / "meg", vocab_size=2000)
    assert ds.dtype == np.int32 and ds.num_documents == 50 and ds.num_sequences == 100
    for i in range(50):
        np.testing.assert_array_equal(ds.document(i), ours.document(i))
    _write_megatron_style(tmp_path / "meg2", docs[:3], code=4)
    merge([tmp_path / "meg", tmp_path / "meg2"], tmp_path / "both")
    both = IndexedDataset(tmp_path / "both")
    assert both.num_documents == 53 and both.num_sequences == 106
    np.testing.assert_array_equal(both.document(51), ours.document(1))


def test_dtype_follows_vocabulary_size(tmp_path):
    assert best_dtype(30003) == np.uint16 and best_dtype(65500) == np.int32
    w = IndexedDatasetWriter(tmp_path / "big", best_dtype(100_000))
    w.add_document([99_999, 70_000, 2])
    w.finish()
    ds = IndexedDataset(tmp_path / "big", vocab_size=100_000)
    assert ds.dtype == np.int32 and ds[0].tolist() == [99_999, 70_000, 2]
    assert read_megatron(tmp_path / "big")["docs"][0].tolist() == [99_999, 70_000, 2]


def _copy_pair(prefix: Path, dst: Path) -> Path:
    for ext in (".bin", ".idx"):
        Path(f"{dst}{ext}").write_bytes(Path(f"{prefix}{ext}").read_bytes())
    return dst


def _corrupt(prefix: Path, ext: str, fn) -> None:
    p = Path(f"{prefix}{ext}")
    p.write_bytes(fn(p.read_bytes()))


@pytest.mark.parametrize(
    ("case", "ext", "mutate", "message"),
    [
        ("missing_bin", ".bin", None, "missing"),
        ("truncated_bin", ".bin", lambda b: b[:-2], "truncated"),
        ("truncated_idx", ".idx", lambda b: b[:-8], "truncated"),
        ("short_idx", ".idx", lambda b: b[:20], "header"),
        ("bad_magic", ".idx", lambda b: b"NOTANIDX\x00" + b[9:], "magic"),
        ("float_dtype", ".idx", lambda b: b[:17] + bytes([7]) + b[18:], "integers"),
        ("unknown_dtype", ".idx", lambda b: b[:17] + bytes([42]) + b[18:], "dtype code"),
        ("bad_version", ".idx", lambda b: b[:9] + struct.pack("<Q", 2) + b[17:], "version"),
    ],
)
def test_bad_files_fail_with_the_file_name(packed, tmp_path, case, ext, mutate, message):
    prefix = _copy_pair(packed[0], tmp_path / case)
    if mutate is None:
        Path(f"{prefix}{ext}").unlink()
    else:
        _corrupt(prefix, ext, mutate)
    with pytest.raises(IndexedDatasetError, match=message) as err:
        IndexedDataset(prefix, vocab_size=2000)
    assert case in str(err.value)


def test_mismatched_pair_and_out_of_vocabulary_ids_are_caught(packed, texts, tok_dir, tmp_path):
    pack([write_jsonl_gz(texts["law"], tmp_path / "law.jsonl.gz")], tok_dir, tmp_path / "law", progress=False)
    mixed = _copy_pair(packed[0], tmp_path / "mixed")
    Path(f"{mixed}.bin").write_bytes(Path(f"{tmp_path / 'law'}.bin").read_bytes())
    with pytest.raises(IndexedDatasetError, match=r"mixed\.bin.*do not belong together"):
        IndexedDataset(mixed)
    # the same files read with a smaller vocabulary: ids beyond it are named with their position
    with pytest.raises(
        IndexedDatasetError, match=r"law\.bin: token id \d+ at token \d+ is outside the vocabulary of 500"
    ):
        IndexedDataset(tmp_path / "law", vocab_size=500)


def test_bad_text_inputs(tok_dir, tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "좋다"}\n{"text": 3\n', encoding="utf-8")
    with pytest.raises(PackError, match=r"bad\.jsonl:2: invalid JSON"):
        pack([tmp_path / "bad.jsonl"], tok_dir, tmp_path / "o", progress=False)
    (tmp_path / "latin1.jsonl").write_bytes(
        '{"text": "좋다"}\n'.encode() + '{"text": "café"}\n'.encode("latin-1")
    )
    with pytest.raises(PackError, match=r"latin1\.jsonl:2: not valid UTF-8"):
        pack([tmp_path / "latin1.jsonl"], tok_dir, tmp_path / "o", num_proc=2, progress=False)
    (tmp_path / "nofield.jsonl").write_text('{"body": "좋다"}\n', encoding="utf-8")
    with pytest.raises(PackError, match="no 'text' field"):
        pack([tmp_path / "nofield.jsonl"], tok_dir, tmp_path / "o", progress=False)
    with pytest.raises(PackError, match="no such file"):
        pack([tmp_path / "absent.jsonl.gz"], tok_dir, tmp_path / "o", progress=False)
    assert not Path(f"{tmp_path / 'o'}.bin").exists() and not list(tmp_path.glob("o.*tmp"))


def test_cli_packs_and_merges(texts, tok_dir, tmp_path, capsys):
    from launch.cli import main

    src = write_jsonl_gz(texts["reviews"][:200], tmp_path / "in.jsonl.gz")
    assert (
        main(
            [
                "pack",
                str(src),
                "--tokenizer",
                str(tok_dir),
                "--out",
                str(tmp_path / "c"),
                "--num-proc",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["documents"] == 200
    assert (
        main(["pack", "--merge", str(tmp_path / "c"), str(tmp_path / "c"), "--out", str(tmp_path / "cc")])
        == 0
    )
    assert IndexedDataset(tmp_path / "cc").num_documents == 400
    assert (
        main(["pack", str(tmp_path / "missing"), "--tokenizer", str(tok_dir), "--out", str(tmp_path / "x")])
        == 1
    )


def test_interoperates_with_megatron_lm_own_reader_and_builder(packed, tmp_path):
    """Megatron-LM's own reader, builder and add_index against ours (megatron-core is a dev dependency)."""
    import megatron.core.datasets.indexed_dataset as meg
    import torch

    prefix, _, _ = packed
    ours = IndexedDataset(prefix)
    theirs = meg.IndexedDataset(str(prefix), mmap=True)
    assert len(theirs) == ours.num_sequences
    np.testing.assert_array_equal(theirs.document_indices, ours.doc_index)
    for i in range(0, ours.num_sequences, 101):
        np.testing.assert_array_equal(theirs[i], ours[i])
    # a file written by Megatron-LM's builder (sentence-split documents), merged both ways
    builder = meg.IndexedDatasetBuilder(str(tmp_path / "m.bin"), dtype=np.uint16)
    for d in range(30):
        doc = ours.document(d)
        builder.add_item(torch.from_numpy(doc[: len(doc) // 2].astype(np.int64)))
        builder.add_item(torch.from_numpy(doc[len(doc) // 2 :].astype(np.int64)))
        builder.end_document()
    builder.finalize(str(tmp_path / "m.idx"))
    read = IndexedDataset(tmp_path / "m", vocab_size=2000)
    assert read.num_documents == 30 and read.num_sequences == 60
    np.testing.assert_array_equal(read.document(7), ours.document(7))
    builder = meg.IndexedDatasetBuilder(str(tmp_path / "mm.bin"), dtype=np.uint16)
    builder.add_index(str(tmp_path / "m"))
    builder.add_index(str(prefix))
    builder.finalize(str(tmp_path / "mm.idx"))
    merge([tmp_path / "m", prefix], tmp_path / "ours")
    for ext in (".bin", ".idx"):
        assert Path(f"{tmp_path / 'ours'}{ext}").read_bytes() == Path(f"{tmp_path / 'mm'}{ext}").read_bytes()
