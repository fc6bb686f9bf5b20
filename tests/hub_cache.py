"""Write a Hugging Face cache with the hub's exact layout, filled with files a test makes.

`models--ORG--NAME/refs/main` holds a commit hash, `blobs/` holds the files under their
sha256, `snapshots/HASH/` links to them, and `.no_exist/HASH/` marks files the repo
lacks (transformers 5 consults those markers before it gives up on an optional file).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import torch

# Optional files that transformers looks for; a real download records their absence.
ABSENT_MARKERS = (
    "added_tokens.json", "special_tokens_map.json", "chat_template.jinja", "chat_template.json",
    "tokenizer.model", "processor_config.json", "preprocessor_config.json", "adapter_config.json",
    "model.safetensors.index.json", "custom_generate/generate.py",
)


def write_repo(hf_home: Path, repo_id: str, files: dict[str, bytes]) -> Path:
    """Lay out `files` as the cached snapshot of `repo_id`; returns the snapshot dir."""
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    for name in ABSENT_MARKERS + ("config.json",):
        if name not in files:
            marker = repo / ".no_exist" / commit / name
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
    return snapshot


def directory_files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}


def torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def json_bytes(obj) -> bytes:
    return json.dumps(obj, indent=2).encode()
