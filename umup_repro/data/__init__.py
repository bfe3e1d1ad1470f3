"""Data: text in, memory-mapped token arrays and deterministic batches out.

One module per step, each importing only those before it:
- `corpora`: the documents of a split (offline wiki, WikiText-103, SlimPajama, local files; hub
  datasets also without network) and `corpus_identity`, which names them without reading them;
- `cache`: the cache folder (`UMUP_CACHE`), its hashed entry names and the build-once-under-a-lock
  protocol;
- `tokenizer`: the BPE trained once on the corpus (cached), or a hub tokenizer;
- `tokens`: each split tokenised once into a memory-mapped array;
- `batches`: `train_batch` / `validation_batches`, pure functions of (tokens, seed, step, shape).

Callers import from here (`from umup_repro import data`); the names below are the public ones.
May import: `umup_repro.core`.
"""

from umup_repro.data.batches import train_batch, validation_batches
from umup_repro.data.cache import BUILD_COUNTS, FORMAT_VERSION, cache_dir
from umup_repro.data.corpora import (
    CORPORA,
    HUB_CORPORA,
    SPLITS,
    DataUnavailableError,
    corpus_identity,
    documents,
    hub_source,
    load_hub_dataset,
)
from umup_repro.data.tokenizer import EOT, bpe_path, eot_id, get_tokenizer, tokenizer_identity
from umup_repro.data.tokens import token_arrays, token_dtype, token_info, token_path

__all__ = [
    "BUILD_COUNTS",
    "CORPORA",
    "EOT",
    "FORMAT_VERSION",
    "HUB_CORPORA",
    "SPLITS",
    "DataUnavailableError",
    "bpe_path",
    "cache_dir",
    "corpus_identity",
    "documents",
    "eot_id",
    "get_tokenizer",
    "hub_source",
    "load_hub_dataset",
    "token_arrays",
    "token_dtype",
    "token_info",
    "token_path",
    "tokenizer_identity",
    "train_batch",
    "validation_batches",
]
