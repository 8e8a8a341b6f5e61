"""Two runs publishing one version: exactly one wins, and neither writes into the other's folder."""

from __future__ import annotations

import subprocess
import sys

import pytest

from corpusmill.tasks import publish


def staged(parent, version: str, marker: str):
    staging = publish.new_staging(parent, version)
    (staging / "data").mkdir()
    (staging / "data" / "train-00000-of-00001.parquet").write_text(marker)
    (staging / publish.MANIFEST).write_text(marker)
    return staging


def test_each_run_stages_in_its_own_folder(tmp_path):
    a, b = publish.new_staging(tmp_path, "1.0.0"), publish.new_staging(tmp_path, "1.0.0")
    assert a != b and a.is_dir() and b.is_dir()
    assert a.name.startswith(".1.0.0.staging-")


def test_the_second_commit_of_a_version_is_refused_and_keeps_the_first(tmp_path):
    target = tmp_path / "1.0.0"
    first, second = staged(tmp_path, "1.0.0", "first"), staged(tmp_path, "1.0.0", "second")
    publish.commit(first, target)
    with pytest.raises(publish.ReleaseExists, match="immutable"):
        publish.commit(second, target)
    assert (target / publish.MANIFEST).read_text() == "first"
    assert (target / "data" / "train-00000-of-00001.parquet").read_text() == "first"
    assert not (target / publish.OWNER).exists()


def test_a_commit_that_loses_the_race_after_its_check_is_refused(tmp_path, monkeypatch):
    """The rename itself refuses: a version published between the check and the rename stays."""
    target = tmp_path / "1.0.0"
    first, second = staged(tmp_path, "1.0.0", "first"), staged(tmp_path, "1.0.0", "second")
    monkeypatch.setattr(publish, "check_absent", lambda target: None)  # both passed their check
    publish.commit(first, target)
    with pytest.raises(publish.ReleaseExists, match="published by another run"):
        publish.commit(second, target)
    assert (target / publish.MANIFEST).read_text() == "first"


def test_staging_left_by_a_dead_run_is_removed_and_a_live_runs_is_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    live = staged(tmp_path, "1.0.0", "running")  # this process: alive
    left = staged(tmp_path, "1.0.0", "killed")
    host = (left / publish.OWNER).read_text().split()[0]
    (left / publish.OWNER).write_text(f"{host} {int(dead.stdout)}\n")
    assert publish.stale_staging(tmp_path) == [left]
    fresh = publish.new_staging(tmp_path, "1.0.1")
    assert not left.exists() and live.exists() and fresh.exists()


# --- an s3:// root: the store's conditional write decides -------------------------------------

def remote_target(name: str) -> str:
    from helpers import S3_BUCKET

    return publish.release_path(f"s3://{S3_BUCKET}/concurrency", name, "1.0.0")


def test_two_uploads_of_one_version_at_once_publish_one_whole_release(s3, tmp_path):
    import threading

    from helpers import release_row, write_release

    from corpusmill.tasks.verify import verify

    target = remote_target("race")
    stagings = [write_release(tmp_path / f"run{k}", [release_row(f"{k}-{i}", split="train") for i in range(20)])
                for k in range(2)]
    outcomes = [None, None]

    def upload(k: int) -> None:
        try:
            publish.upload(stagings[k], target)
            outcomes[k] = "published"
        except (publish.PublishInProgress, publish.ReleaseExists) as e:
            outcomes[k] = type(e).__name__

    threads = [threading.Thread(target=upload, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) in (["PublishInProgress", "published"], ["ReleaseExists", "published"])
    assert verify(target) == []
    assert not s3.exists(target[len("s3://"):].rsplit("/", 1)[0] + "/.1.0.0.claim")


def test_a_live_claim_stops_an_upload_and_a_lapsed_one_is_taken_over(s3, tmp_path):
    import json
    import time

    from helpers import release_row, write_release

    target = remote_target("claimed")
    claim = target[len("s3://"):].rsplit("/", 1)[0] + "/.1.0.0.claim"
    staging = write_release(tmp_path, [release_row("a", split="train")])
    s3.pipe(claim, json.dumps({"host": "elsewhere", "pid": 1, "expires": time.time() + 600}).encode())
    with pytest.raises(publish.PublishInProgress, match="host elsewhere"):
        publish.upload(staging, target)
    assert not s3.exists(target[len("s3://"):])  # nothing copied into place
    s3.pipe(claim, json.dumps({"host": "elsewhere", "pid": 1, "expires": time.time() - 1}).encode())
    publish.upload(staging, target)
    assert publish.read_manifest(target)["version"] == "1.0.0" and not s3.exists(claim)
