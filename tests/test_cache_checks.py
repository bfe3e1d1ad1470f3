"""Issue 27, caches: a token array is checked against its sidecar before use (length each load,
SHA-256 when new or changed, ids within the vocabulary), and a local tokenizer file keys the token
cache by its content. Real `umup-repro train` processes with a private copy of the cache.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_hostile import ENV, TINY

UMUP = [sys.executable, "-m", "umup_repro.cli"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A cache holding TINY's tokenizer and token arrays, built by a real run."""
    root = tmp_path_factory.mktemp("cache")
    cfg = root / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    proc = train(cfg, root / "cache", root / "run")
    assert proc.returncode == 0, proc.stderr
    return cfg, root / "cache"


def train(cfg: Path, cache: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*UMUP, "train", str(cfg), "--out", str(out), "--progress", "none", *extra],
        capture_output=True,
        text=True,
        env={**ENV, "UMUP_CACHE": str(cache)},
        timeout=300,
    )


@pytest.fixture
def cache(built, tmp_path):
    cfg, original = built
    shutil.copytree(original, tmp_path / "cache")
    train_bin = next((tmp_path / "cache" / "tokens").glob("*-train-*.bin"))
    return cfg, tmp_path / "cache", train_bin


def refused(proc, *named):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    for name in named:
        assert name in line, (name, proc.stderr)


def test_a_token_file_cut_short_is_refused(cache, tmp_path):
    cfg, root, path = cache
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # the sidecar still gives the full count
    refused(train(cfg, root, tmp_path / "run"), str(path), "cut short")
    assert not (tmp_path / "run").exists()


def test_a_token_file_changed_in_place_is_refused(cache, tmp_path):
    cfg, root, path = cache
    tokens = np.fromfile(path, dtype=np.uint16)
    tokens[1000:2000] = 7  # same length, other content
    tokens.tofile(path)
    refused(train(cfg, root, tmp_path / "run"), str(path), "SHA-256")


def _rewrite_consistently(path: Path, tokens: np.ndarray, legacy: bool) -> None:
    """The file and a sidecar that agree on length and hash (a hand-made or older entry)."""
    tokens.tofile(path)
    sidecar = path.with_suffix(".json")
    info = json.loads(sidecar.read_text())
    info.update(tokens=len(tokens), sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    for key in ("verified", "max_id") + (("sha256",) if legacy else ()):
        info.pop(key, None)
    sidecar.write_text(json.dumps(info))


@pytest.mark.parametrize("legacy", [False, True])
def test_token_ids_outside_the_vocabulary_are_refused(cache, tmp_path, legacy):
    cfg, root, path = cache
    tokens = np.fromfile(path, dtype=np.uint16)
    tokens[500] = 5000  # model.vocab_size is 1024
    _rewrite_consistently(path, tokens, legacy)
    refused(train(cfg, root, tmp_path / "run"), str(path), "5000", "model.vocab_size")
    assert not (tmp_path / "run").exists()


def test_an_entry_without_a_hash_is_verified_once_and_recorded(cache, tmp_path):
    cfg, root, path = cache
    _rewrite_consistently(path, np.fromfile(path, dtype=np.uint16), legacy=True)
    proc = train(cfg, root, tmp_path / "run")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(path.with_suffix(".json").read_text())
    assert info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() and info["max_id"] < 1024
    assert info["verified"][0] == path.stat().st_size


def test_a_missing_sidecar_is_refused(cache, tmp_path):
    cfg, root, path = cache
    path.with_suffix(".json").unlink()
    refused(train(cfg, root, tmp_path / "run"), path.with_suffix(".json").name)


def _small_bpe(path: Path, vocab: int, text: str) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=["<|endoftext|>"],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator([text] * 50, trainer)
    path.write_text(tokenizer.to_str())


def test_a_tokenizer_replaced_at_the_same_path_gets_a_new_token_cache(cache, tmp_path):
    from umup_repro.core.config import resolve_config
    from umup_repro.data import token_path

    cfg, root, _ = cache
    tok = tmp_path / "tokenizer.json"
    _small_bpe(tok, 300, "the quick brown fox jumps over the lazy dog " * 20)
    sets = ["--set", f"data.tokenizer={tok}"]
    first = train(cfg, root, tmp_path / "a", *sets)
    assert first.returncode == 0 and "tokenizing" in first.stderr, first.stderr
    config = resolve_config({**TINY, "data": {**TINY["data"], "tokenizer": str(tok)}})
    before = token_path(config, "train")
    _small_bpe(tok, 400, "lorem ipsum dolor sit amet, consectetur adipiscing elit " * 20)
    assert token_path(config, "train") != before  # the key holds the content, not only the path
    second = train(cfg, root, tmp_path / "b", *sets)
    assert second.returncode == 0 and "tokenizing" in second.stderr, second.stderr  # rebuilt, not reused
    metrics = [(tmp_path / r / "metrics.csv").read_text() for r in ("a", "b")]
    assert metrics[0] != metrics[1]


def test_a_trained_tokenizer_changed_in_the_cache_is_refused(cache, tmp_path):
    cfg, root, _ = cache
    bpe = next((root / "tokenizers").glob("bpe*.json"))
    assert (bpe.parent / (bpe.name + ".sha256")).exists()  # recorded when trained (or first used)
    bpe.write_text(bpe.read_text().replace('"<|endoftext|>"', '"<|endoftext|>" ', 1))  # same tokenizer, edited
    for entry in (root / "tokens").iterdir():  # the tokenizer is read when token arrays are built
        entry.unlink()
    refused(train(cfg, root, tmp_path / "run"), str(bpe), "does not match")
