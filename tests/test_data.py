"""Corpora, tokenisation cache and batches (umup_repro.data), without any network.

Hub corpora are tested through the same `load_dataset` path as on a cluster: the test builds small
datasets laid out like the real hub repos (Salesforce/wikitext's parquet configs, SlimPajama-627B's
jsonl.zst chunks) in a Hugging Face hub cache, exactly what `hf download` leaves there, and loads
them by their real names with HF_HUB_OFFLINE=1. `datasets` and `huggingface_hub` read their offline
and cache settings when imported, so those tests run in fresh processes, like a user's job.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from umup_repro import data
from umup_repro.core.config import resolve_config

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}  # subprocesses
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    """In-process `datasets` calls keep their cache (lock files of streamed local builders) in tmp."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_datasets")


def run_python(code: str, **env: str) -> dict:
    """Run `code` in a fresh interpreter (offline) and return the JSON it prints last."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **OFFLINE, **env},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def sha(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


# ------------------------------------------------------------------------------------------------
# The offline default, built by two processes at once on an empty cache


BUILD_DEFAULT = """
    import hashlib, json, os, pathlib, time
    import numpy as np
    from umup_repro import data
    from umup_repro.core.config import resolve_config
    config = resolve_config({})
    barrier = pathlib.Path(os.environ["BARRIER"])  # both processes start building together
    (barrier / str(os.getpid())).touch()
    while len(list(barrier.iterdir())) < 2:
        time.sleep(0.01)
    start = time.time()
    arrays = data.token_arrays(config)
    end = time.time()
    batch = data.train_batch(arrays["train"], seed=1, step=2, batch_size=4, seq_len=64)
    print(json.dumps({
        "start": start, "end": end, "counts": dict(data.BUILD_COUNTS),
        "sha": {k: hashlib.sha256(np.asarray(v).tobytes()).hexdigest() for k, v in arrays.items()},
        "batch": batch.tolist(),
    }))
"""


@pytest.fixture(scope="module")
def default_cache(tmp_path_factory):
    """UMUP_CACHE holding the default config's corpus (wiki_offline, BPE of 4096), built by two
    fresh offline processes started together, plus what each reported."""
    cache = tmp_path_factory.mktemp("umup_cache")
    env = {**os.environ, **OFFLINE, "UMUP_CACHE": str(cache), "BARRIER": str(tmp_path_factory.mktemp("barrier"))}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(BUILD_DEFAULT)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-4000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    return cache, results


def test_two_processes_building_one_cache_both_succeed_with_identical_arrays(default_cache):
    cache, (a, b) = default_cache
    assert max(a["start"], b["start"]) < min(a["end"], b["end"]), "the two builds did not overlap"
    assert a["sha"] == b["sha"]
    # one tokenizer training and one tokenisation per split in all: the other process waited and mapped
    assert a["counts"].get("train_bpe", 0) + b["counts"].get("train_bpe", 0) == 1
    assert a["counts"].get("tokenize", 0) + b["counts"].get("tokenize", 0) == 2
    leftovers = [p.name for p in (cache / "tokens").iterdir() if ".tmp-" in p.name]
    assert not leftovers


def test_offline_default_corpus(default_cache, monkeypatch):
    cache, _ = default_cache
    monkeypatch.setenv("UMUP_CACHE", str(cache))
    config = resolve_config({})
    assert config.data.corpus == "wiki_offline"
    arrays = data.token_arrays(config)
    info = data.token_info(config)
    tokenizer = data.get_tokenizer(config)
    eot = data.eot_id(tokenizer)
    for split, tokens in arrays.items():
        assert isinstance(tokens, np.memmap) and tokens.dtype == np.uint16
        assert int(tokens.max()) < config.model.vocab_size
        assert int((tokens == eot).sum()) == info[split]["documents"]  # one EOT after every article
        print(f"wiki_offline {split}: {len(tokens):,} tokens, {info[split]['documents']} documents")
    n_train, n_val = len(arrays["train"]), len(arrays["validation"])
    assert n_train > 1_000_000 and n_val > 30_000
    assert 0.02 < n_val / (n_train + n_val) < 0.09  # val_fraction 0.05 of the articles
    assert tokenizer.get_vocab_size() == 4096
    text = "Photosynthesis converts light energy into chemical energy."
    assert tokenizer.decode(tokenizer.encode(text).ids) == text
    # the held-out articles are whole articles that the training split does not contain
    val_docs = tokenizer.decode(arrays["validation"][:5000].tolist(), skip_special_tokens=False)
    first_val_article = val_docs.split(data.EOT)[0]
    train_text = tokenizer.decode(arrays["train"].tolist(), skip_special_tokens=False)
    assert first_val_article and first_val_article not in train_text


def test_second_load_maps_the_cache_and_tokenises_nothing(default_cache, monkeypatch):
    cache, (a, _) = default_cache
    monkeypatch.setenv("UMUP_CACHE", str(cache))
    config = resolve_config({})
    before = dict(data.BUILD_COUNTS)
    start = time.perf_counter()
    arrays = data.token_arrays(config)
    seconds = time.perf_counter() - start
    assert dict(data.BUILD_COUNTS) == before
    assert {k: sha(v) for k, v in arrays.items()} == a["sha"]
    print(f"second load: {seconds * 1e3:.1f} ms")
    # a fresh process neither tokenises nor even imports `datasets`
    fresh = run_python(
        """
        import json, sys
        from umup_repro import data
        from umup_repro.core.config import resolve_config
        arrays = data.token_arrays(resolve_config({}))
        print(json.dumps({"counts": dict(data.BUILD_COUNTS), "datasets": "datasets" in sys.modules,
                          "lengths": {k: len(v) for k, v in arrays.items()}}))
    """,
        UMUP_CACHE=str(cache),
    )
    assert fresh == {"counts": {}, "datasets": False, "lengths": {k: len(v) for k, v in arrays.items()}}


def test_same_seed_and_step_give_the_same_batch_across_processes(default_cache, monkeypatch):
    cache, (a, b) = default_cache
    monkeypatch.setenv("UMUP_CACHE", str(cache))
    train = data.token_arrays(resolve_config({}))["train"]
    here = data.train_batch(train, seed=1, step=2, batch_size=4, seq_len=64)
    assert here.tolist() == a["batch"] == b["batch"]
    other_seed = data.train_batch(train, seed=2, step=2, batch_size=4, seq_len=64)
    other_step = data.train_batch(train, seed=1, step=3, batch_size=4, seq_len=64)
    assert not here.equal(other_seed) and not here.equal(other_step)


# ------------------------------------------------------------------------------------------------
# Batches


def test_train_batch_is_contiguous_windows_determined_by_seed_and_step():
    tokens = np.arange(10_000, dtype=np.uint16)
    batch = data.train_batch(tokens, seed=0, step=5, batch_size=8, seq_len=32)
    assert batch.shape == (8, 33) and batch.dtype == torch.int64
    assert (batch[:, 1:] - batch[:, :-1] == 1).all()  # each row is one window of the stream
    assert batch.min() >= 0 and batch.max() < 10_000
    assert batch.equal(data.train_batch(tokens, seed=0, step=5, batch_size=8, seq_len=32))
    batches = {
        tuple(data.train_batch(tokens, seed=s, step=t, batch_size=8, seq_len=32)[:, 0].tolist())
        for s in range(3)
        for t in range(3)
    }
    assert len(batches) == 9
    # windows reach both ends of the array
    starts = np.concatenate(
        [data.train_batch(np.arange(40), seed=0, step=t, batch_size=64, seq_len=31)[:, 0] for t in range(4)]
    )
    assert starts.min() == 0 and starts.max() == 8


def test_validation_batches_are_fixed_and_cover_the_array():
    tokens = np.arange(5_000, dtype=np.uint16)
    batches = data.validation_batches(tokens, batch_size=4, seq_len=63, n_batches=3)
    assert len(batches) == 3 and all(b.shape == (4, 64) for b in batches)
    assert all((b[:, 1:] - b[:, :-1] == 1).all() for b in batches)
    assert batches[0][0, 0] == 0 and batches[-1][-1, -1] == 4_999
    again = data.validation_batches(tokens, batch_size=4, seq_len=63, n_batches=3)
    assert all(x.equal(y) for x, y in zip(batches, again))


def test_too_few_tokens_for_one_sequence_is_an_error():
    with pytest.raises(ValueError, match="cannot hold one sequence"):
        data.train_batch(np.arange(10), seed=0, step=0, batch_size=1, seq_len=10)
    with pytest.raises(ValueError, match="cannot hold one sequence"):
        data.validation_batches(np.arange(10), batch_size=1, seq_len=10, n_batches=1)


# ------------------------------------------------------------------------------------------------
# Local text files


def _text_files(folder: Path) -> tuple[list[str], list[str]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = [f"Document {i} talks about topic {i % 7} and the number {i * 13}." for i in range(60)]
    (folder / "a.txt").write_text("\n\n".join(docs[:20]) + "\n")
    (folder / "b.jsonl").write_text("".join(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(docs[20:40])))
    pq.write_table(pa.table({"text": docs[40:]}), folder / "c.parquet")
    return docs, [str(folder / n) for n in ("a.txt", "b.jsonl", "c.parquet")]


def test_text_files_give_every_document_once_with_a_carved_validation_split(tmp_path, monkeypatch):
    monkeypatch.setenv("UMUP_CACHE", str(tmp_path / "cache"))
    docs, files = _text_files(tmp_path)
    config = resolve_config(
        {"data": {"corpus": "text_files", "files": files, "val_fraction": 0.3}, "model": {"vocab_size": 300}}
    )
    arrays = data.token_arrays(config)
    tokenizer = data.get_tokenizer(config)
    split_docs = {
        s: [d for d in tokenizer.decode(a.tolist(), skip_special_tokens=False).split(data.EOT) if d]
        for s, a in arrays.items()
    }
    assert sorted(split_docs["train"] + split_docs["validation"]) == sorted(docs)
    assert 5 <= len(split_docs["validation"]) <= 30
    # the same files map the same cache entry; a changed file gives a new one
    entry = data.token_path(config, "train")
    assert data.token_path(resolve_config(config.model_dump()), "train") == entry
    with open(files[1], "a") as f:
        f.write(json.dumps({"text": "One more document."}) + "\n")
    assert data.token_path(config, "train") != entry


def test_bpe_training_is_deterministic(tmp_path, monkeypatch):
    _, files = _text_files(tmp_path)
    config = resolve_config({"data": {"corpus": "text_files", "files": files}, "model": {"vocab_size": 300}})
    trained = []
    for name in ("one", "two"):
        monkeypatch.setenv("UMUP_CACHE", str(tmp_path / name))
        before = data.BUILD_COUNTS["train_bpe"]
        trained.append(data.get_tokenizer(config).to_str())
        assert data.BUILD_COUNTS["train_bpe"] == before + 1
    assert trained[0] == trained[1]


def test_max_tokens_caps_each_split(tmp_path, monkeypatch):
    monkeypatch.setenv("UMUP_CACHE", str(tmp_path / "cache"))
    _, files = _text_files(tmp_path)
    config = resolve_config(
        {"data": {"corpus": "text_files", "files": files, "max_tokens": 50}, "model": {"vocab_size": 300}}
    )
    arrays = data.token_arrays(config)
    assert len(arrays["train"]) == 50 and len(arrays["validation"]) <= 50


def test_a_tokenizer_larger_than_the_model_vocabulary_is_refused(tmp_path, monkeypatch, hub_home):
    monkeypatch.setenv("UMUP_CACHE", str(tmp_path / "cache"))
    _, files = _text_files(tmp_path)
    tokenizer_file = next((hub_home / "hub").glob("models--*/snapshots/*/tokenizer.json"))
    config = resolve_config(
        {
            "data": {"corpus": "text_files", "files": files, "tokenizer": str(tokenizer_file)},
            "model": {"vocab_size": 300},
        }
    )
    with pytest.raises(ValueError, match="set model.vocab_size to at least"):
        data.token_arrays(config)


# ------------------------------------------------------------------------------------------------
# Hub corpora, offline, from a hub cache laid out like the real repositories

WIKITEXT = "Salesforce/wikitext"
SLIMPAJAMA = "cerebras/SlimPajama-627B"
TOKENIZER_REPO = "umup-test/llama-style-tokenizer"


def _wikitext_rows(config: str, split: str, n: int) -> list[str]:
    """Rows as in WikiText raw: one line each, blank rows, ` = Title = ` and ` = = Section = = `."""
    rows = []
    for k in range(n):
        rows += [
            "",
            f" = Article {k} of {config} {split} = \n",
            "",
            f" The subject {k} of {config} {split} is described here in plain words . \n",
            "",
            " = = History = = \n",
            "",
            f" Its history spans {k + 3} centuries . \n",
        ]
    return rows


def _put_repo(hub: Path, kind: str, repo_id: str, files: dict[str, bytes], commit: str) -> None:
    """Write files the way huggingface_hub caches them: blobs, snapshot symlinks, refs/main."""
    root = hub / f"{kind}s--{repo_id.replace('/', '--')}"
    for rel, content in files.items():
        blob = root / "blobs" / hashlib.sha256(content).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(content)
        link = root / "snapshots" / commit / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)


@pytest.fixture(scope="module")
def hub_home(tmp_path_factory) -> Path:
    """An HF_HOME whose hub cache holds Salesforce/wikitext (two parquet configs), SlimPajama-627B
    (jsonl.zst chunks) and a Llama-style tokenizer repo (`</s>` end token, BOS post-processor)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    home = tmp_path_factory.mktemp("hf_home")
    hub = home / "hub"

    def parquet(rows):
        buf = io.BytesIO()
        pq.write_table(pa.table({"text": rows}), buf)
        return buf.getvalue()

    files = {}
    card = "---\nconfigs:\n"
    for config, n in (("wikitext-103-raw-v1", 12), ("wikitext-2-raw-v1", 3)):
        card += f"- config_name: {config}\n  data_files:\n"
        for split in ("train", "validation", "test"):
            files[f"{config}/{split}-00000-of-00001.parquet"] = parquet(
                _wikitext_rows(config, split, n if split == "train" else 3)
            )
            card += f"  - split: {split}\n    path: {config}/{split}-*\n"
    files["README.md"] = (card + "---\n# WikiText (test copy)\n").encode()
    _put_repo(hub, "dataset", WIKITEXT, files, "1" * 40)

    def jsonl_zst(split, start, n):
        lines = "".join(
            json.dumps(
                {
                    "text": f"SlimPajama {split} document {i}: words about item {i} .",
                    "meta": {"redpajama_set_name": "RedPajamaC4"},
                }
            )
            + "\n"
            for i in range(start, start + n)
        )
        return zstandard.ZstdCompressor().compress(lines.encode())

    _put_repo(
        hub,
        "dataset",
        SLIMPAJAMA,
        {
            "train/chunk1/example_train_0.jsonl.zst": jsonl_zst("train", 0, 20),
            "train/chunk1/example_train_1.jsonl.zst": jsonl_zst("train", 20, 20),
            "validation/chunk1/example_holdout_0.jsonl.zst": jsonl_zst("validation", 0, 10),
            "test/chunk1/example_holdout_0.jsonl.zst": jsonl_zst("test", 0, 10),
            "README.md": b"# SlimPajama (test copy)\n",
        },
        "2" * 40,
    )

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(
        [f"SlimPajama train document {i}: words about item {i} ." for i in range(50)],
        trainers.BpeTrainer(
            vocab_size=400,
            special_tokens=["<unk>", "<s>", "</s>"],
            show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    _put_repo(hub, "model", TOKENIZER_REPO, {"tokenizer.json": tokenizer.to_str().encode()}, "3" * 40)
    return home


def _decode_splits(code_config: str, hf_home: Path, cache: Path) -> dict:
    return run_python(
        f"""
        import json
        from umup_repro import data
        from umup_repro.core.config import resolve_config
        config = resolve_config({code_config})
        arrays = data.token_arrays(config)
        tok = data.get_tokenizer(config)
        print(json.dumps({{"source": data.hub_source(config.data), "counts": dict(data.BUILD_COUNTS),
                          "eot": data.eot_id(tok), "ids": {{k: v.tolist() for k, v in arrays.items()}},
                          "text": {{k: tok.decode(v.tolist(), skip_special_tokens=False)
                                   for k, v in arrays.items()}}}}))
    """,
        HF_HOME=str(hf_home),
        UMUP_CACHE=str(cache),
    )


def test_wikitext103_loads_by_its_hub_name_offline(hub_home, tmp_path):
    out = _decode_splits({"data": {"corpus": "wikitext103"}, "model": {"vocab_size": 512}}, hub_home, tmp_path)
    assert out["source"] == [WIKITEXT, "wikitext-103-raw-v1"]
    train, val = out["text"]["train"], out["text"]["validation"]
    articles = [a for a in train.split(data.EOT) if a]
    assert len(articles) == 12 and articles[0].startswith("= Article 0 of wikitext-103-raw-v1 train =")
    assert "= = History = =" in articles[0] and "centuries" in articles[0]  # sections stay in their article
    assert "wikitext-2" not in train + val and "validation" not in train
    assert val.count(data.EOT) == 3 and "wikitext-103-raw-v1 validation" in val


def test_slimpajama_streams_up_to_the_token_budget_with_a_hub_tokenizer(hub_home, tmp_path):
    out = _decode_splits(
        {
            "data": {"corpus": "slimpajama", "max_tokens": 150, "tokenizer": TOKENIZER_REPO},
            "model": {"vocab_size": 512},
        },
        hub_home,
        tmp_path,
    )
    assert out["source"] == [SLIMPAJAMA, None]
    train, val = out["ids"]["train"], out["ids"]["validation"]
    assert len(train) == 150 and len(val) == 150
    eos = out["eot"]
    assert eos == 2 and 1 not in train  # `</s>` between documents, no BOS from the post-processor
    docs = out["text"]["train"].split("</s>")
    assert docs[0] == "SlimPajama train document 0: words about item 0 ." and 3 < len(docs) < 40
    assert out["text"]["validation"].startswith("SlimPajama validation document 0:")
    assert "train" not in out["text"]["validation"]


def test_hub_name_can_be_a_local_copy_of_the_repository(hub_home, tmp_path, monkeypatch):
    """`hf download --local-dir DIR` users set data.hub_name=DIR (streamed, so in-process is safe:
    nothing is written to the datasets cache)."""
    monkeypatch.setenv("UMUP_CACHE", str(tmp_path / "cache"))
    local = next((hub_home / "hub" / "datasets--cerebras--SlimPajama-627B" / "snapshots").iterdir())
    config = resolve_config({"data": {"corpus": "slimpajama", "hub_name": str(local)}, "model": {"vocab_size": 300}})
    assert data.hub_source(config.data) == (str(local.resolve()), None)
    arrays = data.token_arrays(config)
    text = data.get_tokenizer(config).decode(arrays["validation"].tolist(), skip_special_tokens=False)
    assert text.count(data.EOT) == 10 and "SlimPajama validation document 9" in text


def test_missing_hub_dataset_says_how_to_fetch_it_and_leaves_no_files(tmp_path):
    empty_home, cache = tmp_path / "hf_home", tmp_path / "cache"
    out = run_python(
        """
        import json
        from umup_repro import data
        from umup_repro.core.config import resolve_config
        try:
            data.token_arrays(resolve_config({"data": {"corpus": "wikitext103"}}))
        except data.DataUnavailableError as err:
            print(json.dumps({"error": str(err)}))
    """,
        HF_HOME=str(empty_home),
        UMUP_CACHE=str(cache),
    )
    message = out["error"]
    assert "'Salesforce/wikitext'" in message and "wikitext-103-raw-v1" in message
    assert "datasets.load_dataset('Salesforce/wikitext', 'wikitext-103-raw-v1')" in message
    assert "hf download --repo-type dataset Salesforce/wikitext" in message
    written = [p for p in cache.rglob("*") if p.is_file() and p.parent.name != "locks"]
    assert written == []


# ------------------------------------------------------------------------------------------------
# Benchmark


def test_bench_data_reports_loader_and_step_time(default_cache, monkeypatch, capsys):
    pytest.importorskip("umup_repro.model.decoder")
    from umup_repro.cli import main

    cache, _ = default_cache
    monkeypatch.setenv("UMUP_CACHE", str(cache))
    assert (
        main(
            [
                "bench-data",
                "--batches",
                "500",
                "--steps",
                "1",
                "--warmup",
                "0",
                "--set",
                "model.width=64",
                "--set",
                "model.depth=1",
                "--set",
                "train.batch_size=4",
                "--set",
                "model.seq_len=64",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "cache hit" in out and "batches/s" in out and "train step" in out and ": ok" in out
