"""Great Expectations Data Docs that read offline, inside the release.

GE's Data Docs pages load Bootstrap, bootstrap-table, jQuery, Font Awesome and Vega from
CDNs and GE's logo from S3; GE ships none of these (only its own fonts, images and a small
stylesheet under `great_expectations/render/view/static`, which it copies to
`data_docs/static`). `make_offline` rewrites every page to load nothing remote: CDN
`<link>`/`<script>` tags are removed, the S3 logo points at the local copy, and a small
stylesheet and script of our own (`tasks/static/offline.css`, `offline.js`: layout, tables,
icons, and the few jQuery/bootstrap-table calls the pages make) are copied to
`data_docs/static/` and linked with relative paths. Links to GE's documentation stay.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

ASSETS = Path(__file__).parent / "static"
REMOTE_LINK = re.compile(r"<link\b[^>]*\bhref=[\"']https?://[^>]*>\s*", re.I)
REMOTE_SCRIPT = re.compile(r"<script\b[^>]*\bsrc=[\"']https?://[^>]*>\s*</script>\s*", re.I)
GE_ASSETS = re.compile(r"https://great-expectations-web-assets\.s3\.[a-z0-9-]+\.amazonaws\.com/([A-Za-z0-9_.-]+)(\?[^\"')\s]*)?")
LOCAL_STATIC = re.compile(r"\b(href|src)=([\"'])(?:\./|\.\./)*static/")
# Remote CSS or JS anywhere in a page: what `remote_assets` reports (should be nothing).
REMOTE_ASSET = re.compile(r"<(?:link|script|img)\b[^>]*\b(?:href|src)=[\"'](https?://[^\"']+)", re.I)


def make_offline(docs_dir: Path) -> int:
    """Rewrite every HTML page under `docs_dir` to load only local files; returns the pages rewritten."""
    docs_dir = Path(docs_dir)
    static = docs_dir / "static"
    for name in ("offline.css", "offline.js"):
        (static / ("styles" if name.endswith(".css") else "scripts")).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ASSETS / name, static / ("styles" if name.endswith(".css") else "scripts") / name)
    images = static / "images"
    pages = sorted(docs_dir.rglob("*.html"))
    for page in pages:
        rel = Path(os.path.relpath(static, page.parent)).as_posix()
        html = page.read_text(encoding="utf-8")
        if "/styles/offline.css" in html:
            continue  # already rewritten
        # GE points some pages at static/ one folder too high (validation result pages): fix every local one
        html = LOCAL_STATIC.sub(lambda m: f"{m.group(1)}={m.group(2)}{rel}/", html)
        html = REMOTE_LINK.sub("", html)
        html = REMOTE_SCRIPT.sub("", html)

        def local_image(m: re.Match) -> str:
            name = m.group(1) if (images / m.group(1)).is_file() else "logo-long.png"
            return f"{rel}/images/{name}"

        html = GE_ASSETS.sub(local_image, html)
        head = f'<link rel="stylesheet" href="{rel}/styles/offline.css">\n<script src="{rel}/scripts/offline.js"></script>\n'
        html = html.replace("<head>", "<head>\n" + head, 1)
        page.write_text(html, encoding="utf-8")
    return len(pages)


def remote_assets(docs_dir: Path) -> list[str]:
    """`page: url` for every stylesheet, script or image a page still loads from the network."""
    found = []
    for page in sorted(Path(docs_dir).rglob("*.html")):
        html = page.read_text(encoding="utf-8")
        found += [f"{page.relative_to(docs_dir)}: {url}" for url in REMOTE_ASSET.findall(html)]
        found += [f"{page.relative_to(docs_dir)}: {m.group(0)}" for m in re.finditer(r"url\(['\"]?https?://[^)]+\)", html)]
    return found
