"""`corpusmill publish RELEASE_DIR --hub REPO_ID`: push a release to a Hugging Face dataset repo.

The release folder is uploaded as one commit on `main` (which so always holds the latest
version: `data/`, `plots/` and `validation/` of the previous version are deleted in the
same commit), then tagged `v<version>`, so every version stays loadable with
`load_dataset(REPO_ID, revision="v1.0.0")`. A version whose tag exists is never pushed
again. The release is verified against its manifest before anything is sent.
"""

from __future__ import annotations

from pathlib import Path

from corpusmill.tasks.errors import CorpusmillError
from corpusmill.tasks.publish import read_manifest
from corpusmill.tasks.verify import verify


class HubError(CorpusmillError):
    pass


def version_tag(version: str) -> str:
    return f"v{version}"


def push_to_hub(release_dir: Path, repo_id: str, *, private: bool = False, token: str | None = None, api=None) -> dict:
    """Upload `release_dir` to dataset repo `repo_id` and tag it; returns repo, tag, commit and url."""
    manifest = read_manifest(release_dir)
    problems = verify(release_dir)
    if problems:
        raise HubError(f"{release_dir} does not match its manifest ({'; '.join(problems)}), so it was not pushed to "
                       f"{repo_id}; rebuild the release or restore its files, then check with `corpusmill verify`.")
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    tag = version_tag(manifest["version"])
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        tags = {ref.name for ref in api.list_repo_refs(repo_id, repo_type="dataset").tags}
        if tag in tags:
            raise HubError(f"{repo_id} already has tag {tag}: version {manifest['version']} of {manifest['name']} was "
                           f"pushed before and pushed versions are immutable; publish a new version instead.")
        commit = api.upload_folder(
            repo_id=repo_id, repo_type="dataset", folder_path=str(release_dir),
            commit_message=f"{manifest['name']} {manifest['version']}",
            commit_description=f"corpusmill release, fingerprint {manifest['fingerprint']}",
            delete_patterns=["data/**", "plots/**", "validation/**"],
        )
        api.create_tag(repo_id, tag=tag, revision=commit.oid, repo_type="dataset",
                       tag_message=f"{manifest['name']} {manifest['version']} fingerprint {manifest['fingerprint']}")
    except HubError:
        raise
    except Exception as e:  # network, authentication, permissions: the user can fix these
        raise HubError(
            f"pushing {release_dir} to the Hub dataset repo {repo_id} failed: {type(e).__name__}: {e}. Check that you "
            f"are logged in with write access (`hf auth login` or HF_TOKEN), that HF_HUB_OFFLINE is not set, and "
            f"that {repo_id} is 'user-or-org/name'."
        ) from None
    return {"repo_id": repo_id, "tag": tag, "commit": commit.oid,
            "url": f"https://huggingface.co/datasets/{repo_id}/tree/{tag}"}
