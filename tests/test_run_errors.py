"""Bad input to `corpusmill run` stops before any work with one paragraph: no traceback, no "please report"."""

from __future__ import annotations

import errno

import pytest
from typer.testing import CliRunner

from corpusmill.flows.cli import app
from corpusmill.tasks.errors import is_transient

RECIPE = """\
name: tiny
version: 1.0.0
sources:
  - kind: files
    path: {corpus}
    format: text
    license: CC0-1.0
tokenizer: {{gguf: smollm2}}
output: {{root: {root}}}
"""


@pytest.fixture
def recipe(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("A line of text that is long enough to keep.\n")
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE.format(corpus=corpus, root=tmp_path / "releases"))
    return path


def run(*args: str):
    result = CliRunner().invoke(app, ["run", *args, "--no-progress"])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # reported, not raised
    assert "Traceback" not in result.output and "Please report" not in result.output, result.output
    return result.output


@pytest.mark.parametrize("override, expected", [
    ("sources.9.path=x", "'9' is not one of its indexes"),
    ("sources.x=1", "'x' is not one of its indexes"),
    ("sources.-1.path=x", "'-1' is not one of its indexes"),
    ("dedup.threshold=[", "not valid YAML"),
    ("name.first=x", "name is a single value"),
    ("dedup.threshold=2", "dedup.threshold"),
])
def test_bad_overrides_name_the_key(recipe, override, expected):
    assert expected in run(str(recipe), "--set", override).replace("\n", " ")


def test_a_recipe_that_is_not_utf8(recipe):
    recipe.write_bytes(recipe.read_bytes().replace(b"tiny", b"t\xe9ny"))
    assert "not UTF-8" in run(str(recipe))


def test_an_output_root_or_work_dir_that_is_a_file_stops_before_any_work(recipe, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    output = run(str(recipe), "--set", f"output.root={blocker}", "--work-dir", str(tmp_path / "work"))
    assert "output.root" in output and "cannot be written" in output
    assert not (tmp_path / "work").exists()  # nothing ran
    assert "--work-dir" in run(str(recipe), "--work-dir", str(blocker / "work"))


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EDQUOT])
def test_a_full_or_read_only_disk_is_not_retried(code):
    assert not is_transient(OSError(code, "no"))


def test_a_source_whose_every_row_is_dropped_says_so(recipe, tmp_path):
    (tmp_path / "corpus.txt").write_bytes(bytes(range(128, 256)) * 40)  # not UTF-8 at all
    output = run(str(recipe), "--work-dir", str(tmp_path / "work"))
    assert "every row was dropped" in output and "ingest.invalid_utf8" in output.replace("\n", "")
    assert list((tmp_path / "work" / "tiny" / "quarantine").glob("*.parquet"))
    assert not (tmp_path / "releases" / "tiny" / "1.0.0").exists()
