"""Releases under an s3:// root, against a real S3-compatible server (moto) on loopback."""

from __future__ import annotations

import json
import random

import pytest
import yaml

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

from helpers import S3_BUCKET, release_row, word_doc, write_release  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from corpusmill.flows.cli import app  # noqa: E402
from corpusmill.tasks import publish  # noqa: E402
from corpusmill.tasks.verify import verify  # noqa: E402

BUCKET = S3_BUCKET


def test_upload_is_atomic_and_never_overwrites(s3, tmp_path, monkeypatch):
    root = f"s3://{BUCKET}/unit"
    target = publish.release_path(root, "ds", "1.0.0")
    assert target == f"s3://{BUCKET}/unit/ds/1.0.0" and publish.is_remote(target)
    staging = write_release(tmp_path, [release_row("a", split="train")])

    # an interrupted earlier upload left files but no manifest: the version is absent
    s3.pipe(f"{BUCKET}/unit/ds/1.0.0/data/stale.parquet", b"old")
    assert publish.list_versions(root, "ds") == []
    publish.check_absent(target)
    with pytest.raises(publish.ReleaseNotFound, match="has no manifest.json"):
        publish.read_manifest(target)

    # the manifest is the last object written, after every other file is in place
    written = []
    real_put, real_copy = s3.put_file, s3.copy
    monkeypatch.setattr(s3, "put_file", lambda lpath, rpath, **kw: (written.append(rpath), real_put(lpath, rpath, **kw))[1])
    monkeypatch.setattr(s3, "copy", lambda a, b, **kw: (written.append(b), real_copy(a, b, **kw))[1])
    publish.upload(staging, target)
    assert written[-1] == f"{BUCKET}/unit/ds/1.0.0/manifest.json"
    assert all("/.1.0.0.staging-" in w for w in written[:2])  # first under a temporary prefix
    assert sorted(s3.find(f"{BUCKET}/unit/ds")) == [f"{BUCKET}/unit/ds/1.0.0/{name}" for name in (
        "README.md", "checksums.sha256", "data/train-00000-of-00001.parquet", "manifest.json")
    ]  # stale leftovers replaced, temporary prefix removed
    assert publish.list_versions(root, "ds") == ["1.0.0"]
    assert verify(target) == [] and publish.read_manifest(target)["version"] == "1.0.0"
    with pytest.raises(publish.ReleaseExists, match="immutable"):
        publish.upload(staging, target)

    s3.pipe(f"{BUCKET}/unit/ds/1.0.0/data/train-00000-of-00001.parquet", b"tampered")
    assert "does not match" in verify(target)[0]


@pytest.mark.slow
def test_release_to_s3_root(s3, tmp_path):
    from prefect.testing.utilities import prefect_test_harness

    from corpusmill.flows.release import release

    rng = random.Random(4)
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": word_doc(rng, 30)}) + "\n" for _ in range(40)))
    recipe = {"name": "remote", "version": "1.0.0",
              "sources": [{"kind": "files", "name": "docs", "path": str(tmp_path / "in.jsonl"), "license": "MIT"}],
              "splits": {"train": 0.6, "validation": 0.2, "test": 0.2},
              "output": {"root": f"s3://{BUCKET}/releases"}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    with prefect_test_harness(server_startup_timeout=60):
        target = release(str(tmp_path / "r.yaml"), [], str(tmp_path / "work"))
        assert target == f"s3://{BUCKET}/releases/remote/1.0.0"
        out = CliRunner().invoke(app, ["verify", target])
        assert out.exit_code == 0, out.output
        manifest = publish.read_manifest(target)
        assert s3.exists(f"{BUCKET}/releases/remote/1.0.0/README.md")
        assert s3.exists(f"{BUCKET}/releases/remote/1.0.0/validation/data_docs/index.html")
        assert publish.list_versions(f"s3://{BUCKET}/releases", "remote") == ["1.0.0"]
        assert not list((tmp_path / "work" / "remote").glob(".*.staging-*"))  # local staging cleaned up
        # the same recipe again ends with the same release; another recipe is refused
        assert release(str(tmp_path / "r.yaml"), [], str(tmp_path / "work")) == target
        assert publish.read_manifest(target) == manifest
        with pytest.raises(publish.ReleaseExists, match="built from another recipe"):
            release(str(tmp_path / "r.yaml"), ["seed=99"], str(tmp_path / "work"))
        # a new version may name the remote one as its parent
        second = release(str(tmp_path / "r.yaml"), ["version=1.1.0", f"output.previous={target}"], str(tmp_path / "work"))
        assert publish.read_manifest(second)["parent"]["fingerprint"] == manifest["fingerprint"]
