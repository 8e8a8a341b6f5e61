"""Data Docs inside a release load no stylesheet, script or image from the network."""

from __future__ import annotations

import re
from pathlib import Path

from helpers import suite_params, valid_rows, write_split_files

from corpusmill.tasks.datadocs import make_offline, remote_assets
from corpusmill.tasks.validate import validate_release


def test_data_docs_are_offline(tmp_path):
    summary = validate_release(write_split_files(tmp_path, valid_rows()), suite_params(), tmp_path / "validation")
    docs = Path(summary["data_docs"]).parent
    pages = sorted(docs.rglob("*.html"))
    assert len(pages) >= 5
    assert remote_assets(docs) == []
    for page in pages:
        html = page.read_text(encoding="utf-8")
        # no http(s) URL anywhere in a <link>, <script> or <img> tag, nor in CSS url(...)
        assert not re.search(r"<(link|script|img)\b[^>]*(href|src)=[\"']https?://", html), page
        assert not re.search(r"url\(['\"]?https?://", html), page
        # every local asset a page names exists
        for ref in re.findall(r"<(?:link|script|img)\b[^>]*(?:href|src)=[\"']([^\"'#?]+)", html):
            assert (page.parent / ref).resolve().is_file(), (page, ref)
    assert (docs / "static" / "styles" / "offline.css").is_file() and (docs / "static" / "scripts" / "offline.js").is_file()
    # idempotent: a second pass changes nothing
    before = {p: p.read_text() for p in pages}
    make_offline(docs)
    assert {p: p.read_text() for p in pages} == before
