"""`corpusmill publish --hub`: upload and tag, with a mocked HfApi (no network)."""

from __future__ import annotations

from types import SimpleNamespace
from unittest import mock

import pytest
from helpers import release_row, write_release
from typer.testing import CliRunner

from corpusmill.flows.cli import app
from corpusmill.tasks.hub import HubError, push_to_hub


def _release(folder):
    return write_release(folder, [release_row("a", split="train")], version="1.2.0")


def _api(tags=()):
    api = mock.MagicMock()
    api.list_repo_refs.return_value = SimpleNamespace(tags=[SimpleNamespace(name=t) for t in tags])
    api.upload_folder.return_value = SimpleNamespace(oid="abc123")
    return api


def test_push_uploads_then_tags_the_version(tmp_path):
    release = _release(tmp_path)
    api = _api(tags=["v1.1.0"])
    result = push_to_hub(release, "org/ds", api=api)
    assert result["tag"] == "v1.2.0" and result["commit"] == "abc123"
    api.create_repo.assert_called_once_with("org/ds", repo_type="dataset", private=False, exist_ok=True)
    upload = api.upload_folder.call_args.kwargs
    assert upload["repo_id"] == "org/ds" and upload["repo_type"] == "dataset"
    assert upload["folder_path"] == str(release) and "data/**" in upload["delete_patterns"]
    api.create_tag.assert_called_once()
    assert api.create_tag.call_args.kwargs["tag"] == "v1.2.0" and api.create_tag.call_args.kwargs["revision"] == "abc123"


def test_an_existing_tag_is_never_pushed_again(tmp_path):
    api = _api(tags=["v1.2.0"])
    with pytest.raises(HubError, match="immutable"):
        push_to_hub(_release(tmp_path), "org/ds", api=api)
    api.upload_folder.assert_not_called()


def test_a_damaged_release_is_not_pushed(tmp_path):
    release = _release(tmp_path)
    (release / "data" / "train-00000-of-00001.parquet").write_bytes(b"tampered")
    api = _api()
    with pytest.raises(HubError, match="does not match its manifest"):
        push_to_hub(release, "org/ds", api=api)
    api.create_repo.assert_not_called()


def test_cli_reports_hub_failures_in_one_paragraph(tmp_path):
    release = _release(tmp_path)
    api = _api()
    api.upload_folder.side_effect = OSError("401 Unauthorized")
    with mock.patch("huggingface_hub.HfApi", return_value=api):
        out = CliRunner().invoke(app, ["publish", str(release), "--hub", "org/ds"])
    assert out.exit_code == 1 and "401 Unauthorized" in out.output and "hf auth login" in out.output
    assert "Traceback" not in out.output
    with mock.patch("huggingface_hub.HfApi", return_value=_api()):
        out = CliRunner().invoke(app, ["publish", str(release), "--hub", "org/ds"])
    assert out.exit_code == 0 and "tag v1.2.0" in out.output
