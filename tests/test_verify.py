"""`corpusmill verify` catches any edit to any file of a release, and a broken manifest is one paragraph."""

from __future__ import annotations

import json

import pytest
from helpers import release_row, write_release
from typer.testing import CliRunner

from corpusmill.flows.cli import app
from corpusmill.tasks.publish import ManifestInvalid, ReleaseNotFound
from corpusmill.tasks.verify import CHECKSUMS, verify, write_checksums


@pytest.fixture
def release(tmp_path):
    rows = [release_row(f"r{i}", split="train" if i < 8 else "test", synthetic=i == 3, parent_id="r0" if i == 3 else None)
            for i in range(10)]
    folder = write_release(tmp_path, rows)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.update(
        splits={"train": {"rows": 8, "tokens": 24, "synthetic": 1}, "test": {"rows": 2, "tokens": 6, "synthetic": 0}},
        accounting={"rows_in": 12, "synthetic_in": 2, "rows_out": 10, "synthetic_out": 1,
                    "dropped": {"filter.tokens.too_few_tokens": 3, "augment.refusal": 1}})
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "README.md").write_text("# card\n")
    (folder / "plots").mkdir()
    (folder / "plots" / "token_lengths.png").write_bytes(b"\x89PNG plot")
    (folder / "validation").mkdir()
    (folder / "validation" / "results.json").write_text('{"success": true}')
    write_checksums(folder)
    return folder


def edit_manifest(folder, change) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_an_intact_release_verifies(release):
    assert verify(release) == []
    assert CliRunner().invoke(app, ["verify", str(release)]).exit_code == 0


def test_a_flipped_byte_in_a_data_file_is_caught(release):
    data = next((release / "data").glob("train-*.parquet"))
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    data.write_bytes(bytes(raw))
    assert any(data.name in p and "does not match" in p for p in verify(release))


@pytest.mark.parametrize("change, expected", [
    (lambda m: m["splits"]["train"].update(rows=9), "splits.train.rows is 9"),
    (lambda m: m["files"][0].update(rows=m["files"][0]["rows"] + 1), "the manifest says"),
    (lambda m: m["accounting"].update(rows_in=13), "accounting does not balance"),
    (lambda m: m["accounting"].update(rows_out=11, rows_in=13), "accounting.rows_out is 11"),
    (lambda m: m["accounting"].update(synthetic_out=2, synthetic_in=3), "accounting.synthetic_out is 2"),
])
def test_edited_counts_in_the_manifest_are_caught(release, change, expected):
    edit_manifest(release, change)
    problems = verify(release)
    assert any(expected in p for p in problems), problems
    assert any("manifest.json" in p and CHECKSUMS in p for p in problems)  # the manifest's own checksum too


@pytest.mark.parametrize("path", ["README.md", "plots/token_lengths.png", "validation/results.json"])
def test_edits_to_the_card_plots_and_reports_are_caught(release, path):
    (release / path).write_bytes((release / path).read_bytes() + b" edited")
    problems = verify(release)
    assert len(problems) == 1 and problems[0].startswith(f"{path}: sha256 ") and "does not match" in problems[0]


def test_added_and_removed_files_are_caught(release):
    (release / "plots" / "extra.png").write_bytes(b"x")
    (release / "validation" / "results.json").unlink()
    assert verify(release) == ["validation/results.json: missing", f"plots/extra.png: not listed in {CHECKSUMS}"]


@pytest.mark.parametrize("content, error", [
    (lambda text: text[: len(text) // 2], ManifestInvalid),
    (lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "files"}), ManifestInvalid),
    (lambda text: "[1, 2]", ManifestInvalid),
])
def test_a_broken_manifest_is_one_paragraph_not_a_traceback(release, content, error):
    manifest = release / "manifest.json"
    manifest.write_text(content(manifest.read_text()))
    with pytest.raises(error, match="manifest.json"):
        verify(release)
    for command in (["verify", str(release)], ["diff", str(release), str(release)]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 1 and "manifest.json" in result.output
        assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)


def test_a_missing_release_or_data_file_is_one_paragraph(release, tmp_path):
    with pytest.raises(ReleaseNotFound):
        verify(tmp_path / "nowhere")
    next((release / "data").glob("test-*.parquet")).unlink()
    result = CliRunner().invoke(app, ["diff", str(release), str(release)])
    assert result.exit_code == 1 and "lacks its data file" in result.output
    assert isinstance(result.exception, SystemExit)
