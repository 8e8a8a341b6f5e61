"""Ingest stage: read the recipe's sources into Parquet shards of (id, text, source, license).

Work is planned as units (one per file of a `files` source, one per `python-docs` or `hub`
source) so the flow can run and cache them independently. Every candidate document is
either kept or dropped with a recorded reason, so `rows_in == rows_out + sum(dropped)`:

- `empty`: nothing left after normalisation (blank jsonl lines, blank cells, empty files);
- `invalid_utf8`: a line, cell or text file that does not decode as UTF-8 (or holds a lone
  surrogate from a JSON escape, which cannot be stored);
- `malformed_json`: a jsonl line that is not valid JSON, or not a JSON object;
- `malformed_csv`: a CSV row with the wrong number of fields;
- `missing_text`: the text field absent, null or not a string (or a module with no docstring).

Ids hash the source name and a position that does not depend on where the data sits on
disk: a file's path relative to the fixed directory of its pattern plus the line, row or
document number; the row index for hub datasets; the topic or module name for python-docs.
Numbering: lines (`file:17`) count from 1 as editors do; `row N` and `doc N` count from 0
as pyarrow, pandas and datasets index rows.

A file gone or forbidden, or one whose bytes make no sense as its format, stops the run
with an IngestError naming it; other errors of a store or the Hub (a dropped connection,
a 5xx) propagate as raised, so the flow retries the unit.

Modules: `stage` (plan, fingerprints, run, the Stage), `files` (patterns, formats,
opening, store errors), `compression`, `readers` (one per file format), `gutenberg` and
`splitters` (plain text into documents), `python_docs` and `hub` (the other source
kinds), `writer` (shards and quarantine), `documents` (a candidate document, ids,
normalisation), `errors`.
"""

from corpusmill.tasks.ingest.documents import normalize, row_id
from corpusmill.tasks.ingest.errors import IngestError
from corpusmill.tasks.ingest.files import infer_format
from corpusmill.tasks.ingest.splitters import is_heading
from corpusmill.tasks.ingest.stage import NAME, STAGE, IngestUnit, plan, run, unit_fingerprint

__all__ = ["NAME", "STAGE", "IngestError", "IngestUnit", "infer_format", "is_heading", "normalize", "plan", "row_id",
           "run", "unit_fingerprint"]
