"""The `hub` source: a Hugging Face dataset (or local files through a datasets builder),
one document per row.

A connection that drops or times out, or a Hub answering 5xx, 408 or 429, propagates as
raised so the flow retries the unit; anything else (offline mode, a dataset missing or
forbidden, bad settings or data) is an IngestError naming the dataset.
"""

from __future__ import annotations

import itertools
from typing import Iterator

from corpusmill.tasks.ingest.documents import Doc, cell
from corpusmill.tasks.errors import is_transient_hub_error
from corpusmill.tasks.ingest.errors import IngestError
from corpusmill.tasks.recipe import HubSource, source_name


def documents(source: HubSource) -> Iterator[Doc]:
    """A document per row, keyed 'row N' (from 0)."""
    import datasets  # slow to import; only hub sources need it

    name = source_name(source)
    described = (
        f"{source.dataset!r} (config {source.config!r}, split {source.split!r}, revision {source.revision!r}"
        + (f", data_files {source.data_files!r})" if source.data_files else ")")
    )
    try:
        dataset = datasets.load_dataset(
            source.dataset, source.config, split=source.split, revision=source.revision,
            data_files=source.data_files, streaming=source.streaming,
        )
    except Exception as e:
        if is_transient_hub_error(e):
            raise
        raise IngestError(
            f"ingest source {name!r}: could not load the dataset {described}: {type(e).__name__}: {e}. Check the "
            f"dataset id, config and split, that this machine can reach the Hugging Face Hub (HF_HUB_OFFLINE unset), "
            f"or point at local files with dataset: json|parquet|csv and data_files."
        ) from e
    features = getattr(dataset, "features", None)
    if features is not None and source.text_column not in features:
        raise IngestError(
            f"ingest source {name!r}: the dataset {described} has no column {source.text_column!r} "
            f"(columns: {', '.join(features)}). Set `text_column:` on the source to the column that holds the text."
        )
    rows = iter(dataset)
    for index in itertools.count():
        try:
            row = next(rows)
        except StopIteration:
            return
        except Exception as e:  # streaming reads lazily: a dropped connection surfaces here
            if is_transient_hub_error(e):
                raise
            raise IngestError(
                f"ingest source {name!r}: reading the dataset {described} failed at row {index}: "
                f"{type(e).__name__}: {e}. Check the dataset's files (or the local data files), then run again."
            ) from e
        key = f"row {index}"
        where = f"{source.dataset}:row {index}"
        if source.text_column not in row:
            yield Doc(key, where, None, "missing_text", f"no {source.text_column!r} field")
        else:
            yield cell(key, where, row[source.text_column], source.text_column)

