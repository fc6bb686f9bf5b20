"""Every model the course uses comes from `load_model`.

Three sources, one return type (a TransformerLens 4 ``TransformerBridge`` in
compatibility mode, eval mode, on the requested device):

* ``weights="pretrained"`` -- the real TL 4 loaders: ``boot_transformers`` for
  Hugging Face-format repos (gpt2-small), ``boot_tl_legacy`` for the legacy
  TransformerLens-format repo of gelu-2l. Works online, or offline from an
  existing Hugging Face cache. circuitlab-2l, the course's own small model, ships
  inside the package (``circuitlab/data``) and never needs the hub.
* ``weights="random"`` -- a seeded random-weight twin with the model's exact
  shape and the GPT-2 tokenizer, built with no network. Graders and tests use it.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal, Optional, Union
from unittest import mock

import torch

from circuitlab.tokenizer import gpt2_tokenizer

Weights = Literal["pretrained", "random"]


@dataclass(frozen=True)
class ModelSpec:
    """What the course needs to know about one model."""

    name: str
    repo: str  # Hugging Face repo id
    legacy_tl: bool  # a pre-HF TransformerLens-format repo (config.json + *final.pth)
    weights_file: str  # the file whose presence in the cache means "weights are here"
    n_layers: int
    d_model: int
    n_heads: int
    d_mlp: int
    act_fn: str  # Hugging Face GPT-2 activation name for the random twin
    tied_embeddings: bool
    packaged: bool = False  # weights ship in circuitlab/data/<weights_file>, not on the hub
    # The heads the course text names for this model, role -> (layer, head); measured on
    # the pretrained weights (gelu-2l: the source tutorial; circuitlab-2l: its model card).
    heads: tuple[tuple[str, tuple[int, int]], ...] = ()

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads


MODELS: dict[str, ModelSpec] = {
    "gelu-2l": ModelSpec(
        name="gelu-2l",
        repo="NeelNanda/GELU_2L512W_C4_Code",
        legacy_tl=True,
        weights_file="model_final.pth",
        n_layers=2,
        d_model=512,
        n_heads=8,
        d_mlp=2048,
        act_fn="gelu",
        tied_embeddings=False,
        heads=(("previous-token", (0, 2)), ("duplicate-token", (0, 1)), ("induction", (1, 6))),
    ),
    "gpt2-small": ModelSpec(
        name="gpt2-small",
        repo="gpt2",
        legacy_tl=False,
        weights_file="model.safetensors",
        n_layers=12,
        d_model=768,
        n_heads=12,
        d_mlp=3072,
        act_fn="gelu_new",
        tied_embeddings=True,
    ),
    "circuitlab-2l": ModelSpec(
        name="circuitlab-2l",
        repo="",
        legacy_tl=False,
        weights_file="circuitlab-2l.pt",
        n_layers=2,
        d_model=128,
        n_heads=4,
        d_mlp=512,
        act_fn="gelu",
        tied_embeddings=False,
        packaged=True,
        heads=(("previous-token", (0, 0)), ("induction", (1, 1))),
    ),
}
ALIASES = {"gpt2": "gpt2-small", "gelu_2l": "gelu-2l", "NeelNanda/GELU_2L512W_C4_Code": "gelu-2l"}


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights are neither in the local cache nor downloadable."""


def resolve_name(name: str) -> ModelSpec:
    key = ALIASES.get(name, name)
    if key not in MODELS:
        known = ", ".join(sorted(MODELS))
        raise ValueError(f"Unknown model {name!r}. The course knows: {known}.")
    return MODELS[key]


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def weights_cached(name: str) -> bool:
    """True when the pretrained weights of `name` are in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    spec = resolve_name(name)
    if spec.packaged:
        return packaged_weights(spec).is_file()
    found = [try_to_load_from_cache(spec.repo, f) for f in ("config.json", spec.weights_file)]
    return all(isinstance(path, str) for path in found)


def packaged_weights(spec: ModelSpec) -> Path:
    """Where a model that ships with the course keeps its checkpoint."""
    return Path(__file__).parent / "data" / spec.weights_file


# One model is built at a time in a process: a build draws its initial weights from torch's global
# random generator (a random twin under a fixed seed), and graders.prepare builds the grading
# models in a background thread while a chapter builds its own.
_BUILDING = threading.RLock()


def load_model(
    name: Optional[str] = None,
    weights: Weights = "pretrained",
    device: Optional[Union[str, torch.device]] = None,
):
    """Load a course model as a TransformerBridge in compatibility mode and eval mode.

    Args:
        name: "gelu-2l", "gpt2-small" or "circuitlab-2l"; None for the course
            default (pretrained gelu-2l when its weights are cached, else circuitlab-2l).
        weights: "pretrained" for the real weights (hub or local cache), or
            "random" for the seeded random-weight twin of the same shape.
        device: where to put the model; CUDA when available by default.
    """
    if name is None:
        name, weights = default_model()
    spec = resolve_name(name)
    device = str(device) if device is not None else default_device()
    if weights not in ("random", "pretrained"):
        raise ValueError(f"weights must be 'pretrained' or 'random', not {weights!r}")
    with _BUILDING:
        model = _boot_random_twin(spec, device) if weights == "random" else _boot_pretrained(spec, device)
    model.enable_compatibility_mode(disable_warnings=True)
    # Bridges can come back in training mode; dropout would make runs disagree.
    model.eval()
    model.course_name = f"{spec.name} ({weights})"
    model.course_heads = dict(spec.heads)
    return model


def default_model() -> tuple[str, Weights]:
    """The course default: pretrained gelu-2l when cached here, else circuitlab-2l, the
    small model trained for this course, which ships with the package."""
    if weights_cached("gelu-2l"):
        return "gelu-2l", "pretrained"
    if weights_cached("circuitlab-2l"):
        return "circuitlab-2l", "pretrained"
    return "gelu-2l", "random"  # until circuitlab-2l's checkpoint exists (see its model card)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}


def _unavailable_message(spec: ModelSpec, reason: str) -> str:
    return (
        f"Pretrained weights for {spec.name} ({spec.repo}) are not available: {reason}\n"
        f"To get them, run once on a machine with internet access:\n"
        f"    python -c \"import circuitlab; circuitlab.load_model('{spec.name}')\"\n"
        f"which downloads into the Hugging Face cache (HF_HOME); copying that cache to this "
        f"machine also works. Offline alternatives: "
        f"circuitlab.load_model('{spec.name}', weights='random') (same shape, random weights)."
    )


def _boot_pretrained(spec: ModelSpec, device: str):
    from transformer_lens.model_bridge import TransformerBridge

    if spec.packaged:  # ships with the course: no hub, no cache
        return _boot_packaged(spec, device)
    if _offline() and not weights_cached(spec.name):
        raise WeightsUnavailableError(
            _unavailable_message(spec, "HF_HUB_OFFLINE is set and the local cache lacks them.")
        )
    try:
        if spec.legacy_tl:
            with _cache_listing_when_offline():
                return TransformerBridge.boot_tl_legacy(spec.repo, device=device)
        return TransformerBridge.boot_transformers(spec.repo, device=device)
    except (OSError, ConnectionError) as err:
        # The hub client reports "no network and not cached" as OSError subclasses.
        raise WeightsUnavailableError(_unavailable_message(spec, str(err).splitlines()[0])) from err


def _boot_packaged(spec: ModelSpec, device: str):
    from circuitlab.checkpoint import load_compact

    path = packaged_weights(spec)
    if not path.is_file():
        raise WeightsUnavailableError(
            f"{spec.name}'s checkpoint is not in this installation ({path}). Train it with "
            f"`python training/train_circuitlab_2l.py --out {path}` from a checkout of the "
            f"course (see circuitlab/data/{spec.name}.md), or use "
            f"load_model('{spec.name}', weights='random') for its shape with random weights."
        )
    return _bridge_from_hf(load_compact(path), device)


def _snapshot_files(repo_id: str) -> list[str]:
    from huggingface_hub import snapshot_download

    snapshot = Path(snapshot_download(repo_id, local_files_only=True))
    return sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file())


@contextlib.contextmanager
def _cache_listing_when_offline() -> Iterator[None]:
    """The legacy TL loader lists the repo's files on the hub even when every file is
    cached; offline, answer that listing from the cached snapshot instead."""
    from huggingface_hub import HfApi

    if not _offline():
        yield
        return
    with mock.patch.object(HfApi, "list_repo_files", lambda self, repo_id, **_: _snapshot_files(repo_id)):
        yield


RANDOM_SEED = 20230127  # the tutorial's changelog date; any fixed value would do


def random_hf_model(spec: ModelSpec, seed: int = RANDOM_SEED):
    """A seeded Hugging Face GPT-2 model with `spec`'s shape and random weights."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=len(gpt2_tokenizer()),
        n_positions=1024,
        n_embd=spec.d_model,
        n_layer=spec.n_layers,
        n_head=spec.n_heads,
        n_inner=spec.d_mlp,
        activation_function=spec.act_fn,
        tie_word_embeddings=spec.tied_embeddings,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        hf = GPT2LMHeadModel(config)
        with torch.no_grad():
            # A fresh init leaves LayerNorm biases at zero; TL folds the final one into
            # b_U, so every token would tie on the unembedding bias. Make them distinct.
            hf.transformer.ln_f.bias.normal_(0.0, 0.5)
            for block in hf.transformer.h:
                block.ln_1.bias.normal_(0.0, 0.1)
                block.ln_2.bias.normal_(0.0, 0.1)
    return hf.eval()


def _boot_random_twin(spec: ModelSpec, device: str):
    return _bridge_from_hf(random_hf_model(spec), device)


def _bridge_from_hf(hf, device: str):
    """A bridge around an in-memory Hugging Face GPT-2 model, with the course tokenizer."""
    from transformer_lens.model_bridge import TransformerBridge

    return TransformerBridge.boot_transformers("gpt2", hf_model=hf, tokenizer=gpt2_tokenizer(), device=device)
