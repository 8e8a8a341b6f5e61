"""Builders the tests share: generated text, release rows, small releases on disk, card inputs.

Import as `from helpers import ...`: pytest puts tests/ on the path for its conftest.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from corpusmill.tasks import schema
from corpusmill.tasks.publish import fingerprint, write_splits
from corpusmill.tasks.shards import write_table
from corpusmill.tasks.verify import write_checksums

# A vocabulary for generated documents: random draws from it are distinct enough that
# only planted near duplicates cluster.
WORDS = ("river stone market window garden letter summer harbour lantern violin engine meadow "
         "silver candle orchard bridge pepper thunder valley mirror copper island ribbon falcon "
         "marble castle forest ocean pillow saddle rocket tunnel velvet wagon yellow zebra").split()


def word_doc(rng: random.Random, n_words: int) -> str:
    """`n_words` words drawn from WORDS."""
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


# --- release rows and releases ----------------------------------------------------------------

# The finalized rows the publish step reads: the release schema plus each row's split.
S3_BUCKET = "corpusmill-test"  # the bucket of the `s3` fixture (conftest.py)

FINAL = pa.schema(list(schema.RELEASE) + [pa.field("split", pa.string())])


def release_row(row_id: str, **overrides) -> dict:
    """An original row in its own cluster, with the release columns (and any others) overridden."""
    row = {"id": row_id, "text": f"text {row_id}", "source": "s", "license": "CC0-1.0", "n_tokens": 3,
           "synthetic": False, "parent_id": None, "generator": None, "prompt_id": None, "sampling": None,
           "cluster_id": row_id}
    return {**row, **overrides}


def write_release(folder: Path, rows: list[dict], version: str = "1.0.0", shard_rows: int = 100) -> Path:
    """A release of `rows` (each with a `split`) at `folder/release`, as publishing leaves one: data
    files, a manifest (name, version, fingerprint, files, splits, a balanced accounting), a card
    and `checksums.sha256`, so `verify` finds it intact."""
    release = folder / "release"
    write_table(pa.Table.from_pylist(rows, schema=FINAL), folder / "final.parquet")
    counts = {s: sum(r["split"] == s for r in rows) for s in schema.SPLITS}
    files, stats = write_splits([folder / "final.parquet"], release / "data", counts, shard_rows)
    synthetic = sum(s.synthetic for s in stats.values())
    manifest = {
        "name": "d", "version": version, "fingerprint": fingerprint(files), "files": files,
        "splits": {s: {"rows": st.rows, "tokens": st.tokens, "synthetic": st.synthetic} for s, st in stats.items()},
        "accounting": {"rows_in": len(rows) - synthetic, "synthetic_in": synthetic, "rows_out": len(rows),
                       "synthetic_out": synthetic, "dropped": {}},
    }
    (release / "manifest.json").write_text(json.dumps(manifest))
    (release / "README.md").write_text(f"# d {version}\n")
    write_checksums(release)
    return release


# --- split files for the validation suite -------------------------------------------------------

def suite_params():
    """The recipe settings `valid_rows` pass: 4 to 100 tokens, at most 30% synthetic rows."""
    # Imported here, not above: Great Expectations takes seconds to import, and the card
    # test's subprocess imports this module without needing it.
    from corpusmill.expectations.default import SuiteParams

    return SuiteParams(min_tokens=4, max_tokens=100, max_synthetic_share=0.3)


def split_row(split: str, i: int, **overrides) -> dict:
    """Row `i` of `split`: an original document that passes the suite under `suite_params()`."""
    text = f"Document {i} of the {split} split, with a few plain words."
    return release_row(f"{split}-{i:03d}", **{"text": text, "source": "demo", "n_tokens": 12, **overrides})


def synthetic_row(split: str, i: int, parent: str, **overrides) -> dict:
    """Row `i` of `split`: a paraphrase of `parent` with its full provenance."""
    provenance = {
        "synthetic": True,
        "parent_id": parent,
        "generator": "smollm2@sha256:ab12",
        "prompt_id": "paraphrase@1f2e",
        "sampling": {"backend": "transformers", "temperature": 0.0, "top_p": 1.0, "max_new_tokens": 64, "stop": [],
                     "seed": 12345},
    }
    return split_row(split, i, **{**provenance, "text": f"A paraphrase of {parent}, number {i}.", **overrides})


def valid_rows() -> dict[str, list[dict]]:
    """Three splits that pass the suite: 20 train rows (2 synthetic), 5 validation, 5 test (1 synthetic)."""
    train = [split_row("train", i) for i in range(18)] + [
        synthetic_row("train", 18, "train-000"),
        synthetic_row("train", 19, "train-001"),
    ]
    return {
        "train": train,
        "validation": [split_row("validation", i) for i in range(5)],
        "test": [split_row("test", i) for i in range(4)] + [synthetic_row("test", 4, "test-000")],
    }


def write_split_files(
    root: Path, rows: dict[str, list[dict]], alter: dict[str, Callable[[pa.Table], pa.Table]] | None = None
) -> dict[str, list[Path]]:
    """One Parquet file per split with the release schema; `alter` rewrites a split's table first."""
    files = {}
    for split, split_rows in rows.items():
        table = pa.Table.from_pylist(split_rows, schema=schema.RELEASE)
        if alter and split in alter:
            table = alter[split](table)
        path = root / "data" / f"{split}-00000-of-00001.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        files[split] = [path]
    return files


# --- dataset card inputs ------------------------------------------------------------------------


def card_inputs(folder: Path, licenses: list[str]) -> tuple[dict, dict]:
    """A manifest and split statistics for the card: 12 rows over `licenses`' sources, every third
    synthetic, 9 in train and 3 in test; written under `folder`."""
    def row(i: int) -> dict:
        synthetic = i % 3 == 0
        return release_row(f"r{i}", text=f"text {i}", source=f"src{i % len(licenses)}",
                           license=licenses[i % len(licenses)], n_tokens=5 + i, synthetic=synthetic,
                           parent_id=f"p{i}" if synthetic else None, generator="g@sha256:x" if synthetic else None,
                           prompt_id="paraphrase@abc" if synthetic else None, split="train" if i < 9 else "test")

    write_table(pa.Table.from_pylist([row(i) for i in range(12)], schema=FINAL), folder / "final.parquet")
    files, stats = write_splits([folder / "final.parquet"], folder / "data", {"train": 9, "test": 3}, 100)
    manifest = {
        "name": "c", "version": "1.2.0", "fingerprint": fingerprint(files), "code_version": "0.1.0", "seed": 1,
        "tokenizer": "tok",
        "recipe": {"name": "c", "sources": [{"license": lic} for lic in licenses],
                   "dedup": {"ngram": 5, "num_perm": 128, "threshold": 0.8},
                   "augment": {"model": "m", "templates": ["paraphrase"], "fraction": 0.1, "max_synthetic_share": 0.3}},
        "inputs": [{"name": f"src{i}", "kind": "files", "license": lic} for i, lic in enumerate(licenses)],
        "files": files,
        "accounting": {"rows_in": 20, "synthetic_in": 6, "rows_out": 12, "synthetic_out": 4,
                       "dropped": {"dedup.near_duplicate": 3, "filter.tokens.too_few_tokens": 11}},
        "validation": {"suite": "default", "evaluated": 9, "failed": 0, "critical_failures": [], "warnings": [],
                       "per_batch": {"train": {"rows": 9, "success": True}}},
    }
    return manifest, stats
