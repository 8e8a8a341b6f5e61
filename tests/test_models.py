"""Model references: identities that follow the weights' content, and users' mistakes as
clear errors. No network: the Hub cases use a fake Hugging Face cache or a fake `HfApi`."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from huggingface_hub import HfApi, constants
from huggingface_hub.utils import HfHubHTTPError, RepositoryNotFoundError

from corpusmill.tasks.errors import CorpusmillError
from corpusmill.tasks.models import DeviceUnavailable, ModelNotFound, load_tokenizer, pick_device, resolve
from corpusmill.tasks.recipe import ModelRef
from corpusmill.tasks.shards import file_sha256

COMMIT_A, COMMIT_B = "a" * 40, "b" * 40


@pytest.fixture(autouse=True)
def fresh_resolve():
    """`resolve` remembers each reference per process; these tests change what is behind one."""
    resolve.cache_clear()
    yield
    resolve.cache_clear()


# --- GGUF files -----------------------------------------------------------------------


def test_gguf_identities_stay_the_files_sha256(tmp_path):
    smollm2 = resolve(ModelRef(gguf="smollm2"))
    path = Path(smollm2.location) / smollm2.gguf_file
    # The demo's generator string: the Hub id of the original model and the file's sha256.
    assert smollm2.identity == f"HuggingFaceTB/SmolLM2-135M-Instruct@sha256:{file_sha256(path)}"
    own = tmp_path / "tiny.gguf"
    own.write_bytes(b"GGUF not really")
    assert resolve(ModelRef(gguf=str(own))).identity == f"tiny.gguf@sha256:{file_sha256(own)}"
    with pytest.raises(ModelNotFound, match="missing.gguf does not exist"):
        resolve(ModelRef(gguf=str(tmp_path / "missing.gguf")))


# --- local folders --------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> Path:
    """A tiny model folder as save_pretrained writes it: weights, configs, tokenizer, chat template."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("models") / "tiny"
    config = LlamaConfig(vocab_size=64, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1)
    LlamaForCausalLM(config).save_pretrained(folder)
    load_tokenizer(ModelRef(gguf="smollm2")).save_pretrained(folder)
    return folder


def test_a_folders_identity_changes_with_any_file_that_defines_the_model(saved_model, tmp_path):
    folder = shutil.copytree(saved_model, tmp_path / "tiny")
    original = resolve(ModelRef(path=str(folder))).identity
    assert original.startswith("tiny@sha256:")
    resolve.cache_clear()
    assert resolve(ModelRef(path=str(folder))).identity == original  # the same files: the same identity

    written = sorted(p.name for p in folder.iterdir())
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(written)
    seen = {original}
    for name in written:  # every file save_pretrained wrote counts
        path = folder / name
        content = path.read_bytes()
        path.write_bytes(content + b" ")
        resolve.cache_clear()
        seen.add(resolve(ModelRef(path=str(folder))).identity)
        path.write_bytes(content)
    assert len(seen) == len(written) + 1, "a changed file left the identity as it was"

    # A renamed file is another model too.
    (folder / "config.json").rename(folder / "config.other.json")
    resolve.cache_clear()
    assert resolve(ModelRef(path=str(folder))).identity not in seen


def test_a_folders_identity_ignores_what_does_not_define_the_model(saved_model, tmp_path):
    folder = shutil.copytree(saved_model, tmp_path / "tiny")
    original = resolve(ModelRef(path=str(folder))).identity
    (folder / "README.md").write_text("# A tiny model\n", encoding="utf-8")
    (folder / "checkpoint-500").mkdir()
    (folder / "checkpoint-500" / "model.safetensors").write_bytes(b"an older training step")
    resolve.cache_clear()
    assert resolve(ModelRef(path=str(folder))).identity == original


def test_a_folder_without_a_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFound, match="does not exist; set `path:`"):
        resolve(ModelRef(path=str(tmp_path / "nowhere")))
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "README.md").write_text("no weights here", encoding="utf-8")
    with pytest.raises(ModelNotFound, match="holds no model files"):
        resolve(ModelRef(path=str(tmp_path / "notes")))


# --- Hub ids --------------------------------------------------------------------------


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache, offline (as tests always are)."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def cache_model(cache: Path, repo_id: str, commit: str, ref: str = "main") -> None:
    """What a download leaves in the cache: the snapshot of `commit`, and `ref` pointing at it."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "snapshots" / commit).mkdir(parents=True, exist_ok=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}", encoding="utf-8")
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / ref).write_text(commit, encoding="utf-8")


def test_offline_a_hub_id_is_the_commit_of_its_cached_snapshot(hub_cache):
    cache_model(hub_cache, "org/tiny", COMMIT_A)
    cache_model(hub_cache, "org/tiny", COMMIT_B, ref="v2")
    resolved = resolve(ModelRef(name="org/tiny"))
    assert resolved.identity == f"org/tiny@{COMMIT_A}"
    assert resolved.revision == COMMIT_A  # loaded at that commit, so the weights are the ones named
    assert resolve(ModelRef(name="org/tiny", revision="v2")).identity == f"org/tiny@{COMMIT_B}"

    # A retrained model downloaded again: main moves, and so does the identity.
    cache_model(hub_cache, "org/tiny", COMMIT_B)
    resolve.cache_clear()
    assert resolve(ModelRef(name="org/tiny")).identity == f"org/tiny@{COMMIT_B}"


def test_offline_a_hub_id_not_in_the_cache_is_a_clear_error(hub_cache):
    with pytest.raises(ModelNotFound, match=r"'org/missing' is not in the local Hugging Face cache.*hf download") as e:
        resolve(ModelRef(name="org/missing"))
    assert isinstance(e.value, CorpusmillError)
    cache_model(hub_cache, "org/tiny", COMMIT_A)
    with pytest.raises(ModelNotFound, match="'org/tiny' at revision 'v9'"):
        resolve(ModelRef(name="org/tiny", revision="v9"))


def test_a_commit_revision_is_its_own_identity(hub_cache):
    # Nothing to look up: a commit hash names the weights already.
    assert resolve(ModelRef(name="org/tiny", revision=COMMIT_A)).identity == f"org/tiny@{COMMIT_A}"


def test_online_a_hub_id_is_the_commit_the_hub_names(hub_cache, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    asked = []

    def model_info(self, repo_id, revision=None, **_):
        asked.append((repo_id, revision))
        if repo_id == "org/tiny":
            return SimpleNamespace(sha=COMMIT_B)
        response = SimpleNamespace(status_code=401 if repo_id == "org/gated" else 404, headers={}, request=None)
        error = RepositoryNotFoundError if response.status_code == 404 else HfHubHTTPError
        raise error(f"{response.status_code} for {repo_id}", response=response)

    monkeypatch.setattr(HfApi, "model_info", model_info)
    cache_model(hub_cache, "org/tiny", COMMIT_A)  # an older download: the Hub's answer wins
    resolved = resolve(ModelRef(name="org/tiny", revision="main"))
    assert (resolved.identity, resolved.revision, asked) == (f"org/tiny@{COMMIT_B}", COMMIT_B, [("org/tiny", "main")])
    with pytest.raises(ModelNotFound, match="the Hub has no model 'org/typo'"):
        resolve(ModelRef(name="org/typo"))
    with pytest.raises(ModelNotFound, match="refused access to the model 'org/gated'.*HF_TOKEN"):
        resolve(ModelRef(name="org/gated"))


# --- devices ----------------------------------------------------------------------------


def test_cuda_without_a_gpu_is_a_users_error():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    with pytest.raises(DeviceUnavailable, match="set augment.device to 'auto' or 'cpu'") as e:
        pick_device("cuda")
    assert isinstance(e.value, CorpusmillError)
    assert pick_device("auto") == ("cpu", torch.float32)
