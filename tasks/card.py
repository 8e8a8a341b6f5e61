"""The dataset card (README.md of a release) and its plots.

The card is written for the Hugging Face Hub: front matter built with huggingface_hub's
`DatasetCardData` (`configs` with `data_files` per split, `license` as a Hub license id,
`task_categories`, `size_categories`), then one Markdown section per aspect of the release:
sources and licenses, rows and tokens per split and source, where dropped rows went, the
synthetic share per split and template, deduplication and validation, and PNG plots stored
in the release (`plots/`).

Everything here is a pure function of the manifest and the split statistics, so the card
is byte-identical on every rebuild.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from huggingface_hub import DatasetCardData

# Source licenses (SPDX-style, as written in recipes) -> Hugging Face Hub license ids.
# Licenses with no Hub id become `other` with `license_name`.
HUB_LICENSES = {
    "apache-2.0": "apache-2.0", "mit": "mit", "bsd-2-clause": "bsd-2-clause", "bsd-3-clause": "bsd-3-clause",
    "cc0-1.0": "cc0-1.0", "cc-by-2.0": "cc-by-2.0", "cc-by-2.5": "cc-by-2.5", "cc-by-3.0": "cc-by-3.0",
    "cc-by-4.0": "cc-by-4.0", "cc-by-sa-3.0": "cc-by-sa-3.0", "cc-by-sa-4.0": "cc-by-sa-4.0",
    "cc-by-nc-4.0": "cc-by-nc-4.0", "cc-by-nc-sa-4.0": "cc-by-nc-sa-4.0", "cc-by-nd-4.0": "cc-by-nd-4.0",
    "gfdl": "gfdl", "gfdl-1.3": "gfdl", "gpl-2.0": "gpl-2.0", "gpl-3.0": "gpl-3.0", "lgpl-3.0": "lgpl-3.0",
    "mpl-2.0": "mpl-2.0", "odc-by": "odc-by", "odc-by-1.0": "odc-by", "odbl": "odbl", "odbl-1.0": "odbl",
    "pddl": "pddl", "pddl-1.0": "pddl", "psf-2.0": "psf-2.0", "unlicense": "unlicense", "wtfpl": "wtfpl",
    "cdla-permissive-2.0": "cdla-permissive-2.0", "cdla-sharing-1.0": "cdla-sharing-1.0",
}


def hub_license(license_: str) -> str | None:
    """The Hub license id of a source license, or None when the Hub has none (use `other`)."""
    return HUB_LICENSES.get(license_.strip().lower())


def license_front_matter(licenses: list[str]) -> dict:
    """`license` (and `license_name` for `other`): one Hub id, or `other` for several or unknown ones."""
    distinct = sorted(set(licenses))
    if len(distinct) == 1:
        hub = hub_license(distinct[0])
        if hub:
            return {"license": hub}
        return {"license": "other", "license_name": _slug(distinct[0])}
    return {"license": "other", "license_name": "multiple-licenses",
            "license_details": "Rows carry their source's license in the `license` column: " + ", ".join(distinct)}


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in ".-" else "-" for c in text.lower()).strip("-") or "other"


def size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                         (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < limit:
            return label
    return "n>10M"


# --- plots -------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "corpusmill"
    return plt


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})  # no version or timestamp in the PNG


def plot_token_lengths(stats: dict, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
    for split, s in stats.items():
        lengths = np.flatnonzero(s.rows_by_tokens)  # each length once, weighted by its rows: the same bins and heights
        ax.hist(lengths, weights=s.rows_by_tokens[lengths], bins=50, histtype="step", label=f"{split} ({s.rows:,} rows)")
    ax.set(xlabel="tokens per row", ylabel="rows", title="Token length by split", yscale="log")
    ax.legend()
    _save(fig, path)
    plt.close(fig)


def plot_composition(stats: dict, path: Path) -> None:
    """Share of tokens per source within each split, original and synthetic rows apart."""
    plt = _pyplot()
    sources = sorted({name for s in stats.values() for name in s.by_source})
    splits = list(stats)
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(splits) + 1.6), dpi=100)
    left = np.zeros(len(splits))
    colors = plt.get_cmap("tab20").colors
    for i, source in enumerate(sources):
        for j, (kind, hatch) in enumerate((("original", None), ("synthetic", "//"))):
            key = "tokens" if kind == "original" else "synthetic_tokens"
            values = np.array([s.by_source.get(source, {}).get(key, 0) for s in stats.values()], dtype=float)
            if kind == "original":
                values -= np.array([s.by_source.get(source, {}).get("synthetic_tokens", 0) for s in stats.values()])
            totals = np.array([max(s.tokens, 1) for s in stats.values()], dtype=float)
            share = values / totals
            if share.any():
                ax.barh(splits, share, left=left, color=colors[(2 * i + j) % len(colors)], hatch=hatch,
                        label=f"{source} ({kind})", edgecolor="white")
            left += share
    ax.set(xlabel="share of tokens", xlim=(0, 1), title="Composition by source")
    ax.invert_yaxis()
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    _save(fig, path)
    plt.close(fig)


def write_plots(stats: dict, plots_dir: Path) -> list[str]:
    """Every plot of the card; returns their paths relative to the release."""
    if not stats:
        return []
    plot_token_lengths(stats, plots_dir / "token_lengths.png")
    plot_composition(stats, plots_dir / "composition.png")
    return ["plots/token_lengths.png", "plots/composition.png"]


# --- the card ----------------------------------------------------------------------------


def card_data(manifest: dict, stats: dict) -> DatasetCardData:
    """The front matter the Hub reads: license ids, sizes, task and one `default` config with its split files."""
    recipe = manifest["recipe"]
    synthetic = any(s.synthetic for s in stats.values())
    return DatasetCardData(
        **license_front_matter(sorted({s["license"] for s in recipe["sources"]})),
        pretty_name=recipe["name"],
        size_categories=[size_category(_total_rows(stats))],
        task_categories=["text-generation"],
        task_ids=["language-modeling"],
        tags=["corpusmill"] + (["synthetic"] if synthetic else []),
        configs=[{"config_name": "default",
                  "data_files": [{"split": s, "path": f"data/{s}-*.parquet"} for s in stats]}],
    )


def dataset_card(manifest: dict, stats: dict, dedup_report: dict) -> str:
    """The release's README.md: the front matter, then one section per aspect of the release."""
    sections = [
        _overview(manifest, stats),
        _sources(manifest),
        _splits(manifest, stats),
        _where_rows_went(manifest),
        _data_safety(manifest, stats),
        _credits(manifest),
        _synthetic_data(manifest, stats),
        _deduplication(manifest, dedup_report),
        _validation(manifest),
        _reproducing(manifest),
    ]
    body = "\n\n".join("\n".join(lines) for lines in sections if lines)
    # The layout huggingface_hub's RepoCard writes: YAML block, blank line, Markdown.
    return f"---\n{card_data(manifest, stats).to_yaml()}\n---\n\n{body}\n"


def _total_rows(stats: dict) -> int:
    return sum(s.rows for s in stats.values())


def _table(header: list[str], rows: list[list], right_from: int = 1) -> list[str]:
    align = ["---" if i < right_from else "---:" for i in range(len(header))]
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "-"


def _overview(manifest: dict, stats: dict) -> list[str]:
    """Title, size, how to load it, the fingerprint and the version it follows."""
    name, version = manifest["recipe"]["name"], manifest["version"]
    lines = [f"# {name} {version}", "",
             f"A language-modeling dataset of {_total_rows(stats):,} rows and "
             f"{sum(s.tokens for s in stats.values()):,} tokens, built by corpusmill {manifest['code_version']} "
             "from the recipe stored in `manifest.json`.", "",
             "```python",
             "from datasets import load_dataset",
             f'ds = load_dataset("parquet", data_dir="{name}/{version}")  # or the Hub repo id',
             "```", "",
             f"Fingerprint `{manifest['fingerprint']}`: a hash over every data file's sha256, the same on every "
             "rebuild. Check the files with `corpusmill verify <this folder>`, rebuild from the recorded recipe "
             "with `corpusmill rebuild <this folder> --out DIR`."]
    if manifest.get("parent"):
        p = manifest["parent"]
        lines += ["", f"This version follows **{p['version']}** (fingerprint `{p['fingerprint']}`): rows and "
                      "lineages that were in its validation or test split keep that split here."]
    return lines


def _sources(manifest: dict) -> list[str]:
    inputs = manifest.get("inputs", [])
    lines = ["## Sources and licenses", ""]
    lines += _table(["source", "kind", "license", "Hub license id"],
                    [[i["name"], i.get("kind", ""), i["license"], hub_license(i["license"]) or "other"]
                     for i in inputs], right_from=4)
    if len({s["license"] for s in manifest["recipe"]["sources"]}) > 1:
        lines += ["", "The release mixes licenses; each row's `license` column names the license of its source, "
                      "so a subset under one license is one filter away."]
    return lines


def _splits(manifest: dict, stats: dict) -> list[str]:
    """Rows and tokens per split, then per split and source, and the plots."""
    source_license = {i["name"]: i["license"] for i in manifest.get("inputs", [])}
    lines = ["## Splits", ""]
    lines += _table(["split", "rows", "tokens", "mean tokens", "synthetic share", "files"],
                    [[split, f"{s.rows:,}", f"{s.tokens:,}", f"{s.tokens / max(s.rows, 1):,.1f}",
                      _share(s.synthetic, s.rows), sum(1 for f in manifest["files"] if f["split"] == split)]
                     for split, s in stats.items()])
    per_source = [[split, name, source_license.get(name, ""), f"{e['rows']:,}", f"{e['tokens']:,}",
                   f"{e['synthetic']:,}", _share(e["rows"], s.rows)]
                  for split, s in stats.items() for name, e in sorted(s.by_source.items())]
    lines += ["", "### Rows and tokens per split and source", ""]
    lines += _table(["split", "source", "license", "rows", "tokens", "synthetic rows", "share of split rows"],
                    per_source, right_from=3)
    lines += ["", "Splits are assigned by a hash of each row's lineage root (a synthetic row follows its parent, "
                  "near duplicates stay together), so no document, its paraphrase or its near duplicate crosses "
                  "splits.", "", "![Token length by split](plots/token_lengths.png)", "",
              "![Composition by source](plots/composition.png)"]
    return lines


def _where_rows_went(manifest: dict) -> list[str]:
    """The accounting: rows in, rows out, and every dropped row by stage and reason."""
    acc = manifest["accounting"]
    rows_in = acc["rows_in"] + acc["synthetic_in"]
    lines = ["## Where the rows went", "",
             f"{acc['rows_in']:,} source rows and {acc['synthetic_in']:,} generated rows came in; "
             f"{acc['rows_out']:,} rows are in the release ({acc['synthetic_out']:,} synthetic) and "
             f"{sum(acc['dropped'].values()):,} were dropped, each counted once by stage and reason:", ""]
    lines += _table(["stage", "reason", "rows dropped", "share of rows in"],
                    [[*key.split(".", 1), f"{n:,}", _share(n, rows_in)] for key, n in acc["dropped"].items()]
                    or [["-", "none", "0", "-"]], right_from=2)
    return lines


def _data_safety(manifest: dict, stats: dict) -> list[str]:
    """What each curation control found and did (the manifest's `data_safety`)."""
    safety = manifest.get("data_safety")
    if not safety:
        return []
    total = _total_rows(stats)
    lines = ["## Data safety", "",
             "What the recipe's filter steps found in source and generated rows alike, and what they did. The "
             "validation suite checks the release again with the same detectors.", ""]
    lines += ["### Personal data", ""]
    if safety["personal_data"] is None:
        lines += ["No `pii` step: personal data was neither searched for nor removed."]
    else:
        lines += _table(["type", "action", "matches", "rows"],
                        [[kind, f["action"], f"{f.get('found', 0):,}", f"{f.get('rows', 0):,}"]
                         for kind, f in safety["personal_data"].items()] or [["-", "-", "0", "0"]], right_from=2)
    lines += ["", "### Languages", ""]
    lines += _table(["language", "rows", "share of rows"],
                    [[lang, f"{n:,}", _share(n, total)] for lang, n in safety["languages"].items()])
    lines += ["", "### Rows dropped by filter step and rule", ""]
    drops = [[step, rule, f"{n:,}"] for step, rules in safety["filter_drops"].items() for rule, n in rules.items()]
    lines += _table(["step", "rule", "rows dropped"], drops or [["-", "none", "0"]], right_from=2)
    if safety.get("toxicity") is not None:
        t = safety["toxicity"]
        lines += ["", "### Toxicity", "",
                  f"Word-list check: {t.get('judged', 0):,} rows judged, {t.get('flagged_rows', 0):,} with a listed "
                  f"word, {t.get('dropped', 0):,} dropped over the recipe's share; {t.get('not_judged', 0):,} rows in "
                  "languages the list does not cover were passed unjudged."]
    if safety["contamination"]:
        lines += ["", "### Evaluation-set contamination", ""]
        lines += _table(["eval set", "policy", "rows dropped", "rows cut", "eval items found in training data"],
                        [[name, c["policy"], f"{c['rows_dropped']:,}", f"{c['rows_cut']:,}",
                          f"{c['items_found']:,} of {c['items_total']:,} ({_share(c['items_found'], c['items_total'])})"]
                         for name, c in safety["contamination"].items()], right_from=2)
    return lines


def _credits(manifest: dict) -> list[str]:
    """The third-party models and word lists the recipe's filter steps ran on, with their licenses."""
    from corpusmill.tasks.filters import step_class

    steps = [entry["step"] for entry in manifest["recipe"].get("filters") or []]
    credits = dict.fromkeys(credit for step in steps for credit in step_class(step).CREDITS)
    if not credits:
        return []
    return ["## Credits", "", "The filter steps ran on:", "", *(f"- {credit}" for credit in credits)]


def _synthetic_data(manifest: dict, stats: dict) -> list[str]:
    """How synthetic rows were made and gated, and their share per split and prompt; nothing without augment."""
    aug = manifest["recipe"].get("augment")
    if not aug:
        return []
    lines = ["## Synthetic data", "",
             f"Generated by `{manifest.get('generator', aug['model'])}` with templates "
             f"{', '.join(f'`{t}`' for t in aug['templates'])} for {aug['fraction']:.0%} of the source rows. "
             f"Every synthetic row records `parent_id`, `generator`, `prompt_id` (template id and a hash of "
             f"its text) and `sampling` (backend, temperature, top_p, repetition penalty, no-repeat n-gram size, "
             f"max_new_tokens, stop sequences and seed). Synthetic rows are capped at {aug['max_synthetic_share']:.0%} of each split and pass "
             "quality gates (empty, refusal, repetition, length, copy of the source) before they are kept.", ""]
    prompts = sorted({p for s in stats.values() for p in s.by_prompt})
    rows = []
    for split, s in stats.items():
        for p in prompts:
            n = s.by_prompt.get(p, {"rows": 0, "tokens": 0})
            rows.append([split, f"`{p}`", f"{n['rows']:,}", f"{n['tokens']:,}", _share(n["rows"], s.rows)])
        rows.append([split, "all templates", f"{s.synthetic:,}", f"{s.synthetic_tokens:,}",
                     _share(s.synthetic, s.rows)])
    return lines + _table(["split", "prompt_id", "synthetic rows", "tokens", "share of split rows"], rows, right_from=2)


def _deduplication(manifest: dict, dedup_report: dict) -> list[str]:
    extra = dedup_report.get("extra", {})
    d = manifest["recipe"]["dedup"]
    dropped = {k.split(".", 1)[1]: n for k, n in manifest["accounting"]["dropped"].items() if k.startswith("dedup.")}
    lines = ["## Deduplication", "",
             f"Exact duplicates (normalized text) and near duplicates by MinHash LSH over word {d['ngram']}-grams, "
             f"{d['num_perm']} permutations ({extra.get('bands', '?')} bands x {extra.get('rows_per_band', '?')} "
             f"rows), Jaccard threshold {d['threshold']}; candidate pairs are verified by exact Jaccard. The kept "
             "member of a cluster: original before synthetic, then the lowest id.", ""]
    lines += _table(["measure", "value"], [
        ["exact duplicates dropped", f"{dropped.get('exact_duplicate', 0):,}"],
        ["near duplicates dropped", f"{dropped.get('near_duplicate', 0):,}"],
        ["candidate pairs", f"{extra.get('candidate_pairs', 0):,}"],
        ["pairs verified / rejected", f"{extra.get('verified_pairs', 0):,} / {extra.get('rejected_pairs', 0):,}"],
        ["clusters of more than one row", f"{extra.get('clusters', 0):,}"],
        ["largest cluster", f"{extra.get('largest_cluster', 1):,} rows"]])
    if extra.get("s_curve"):
        from corpusmill.tasks.dedup import report_details  # S-curve, cluster size histogram, example pairs

        lines += ["", report_details(dedup_report)]
    return lines


def _validation(manifest: dict) -> list[str]:
    v = manifest["validation"]
    lines = ["## Validation", "",
             f"Great Expectations suite `{v.get('suite')}`: {v.get('evaluated', 0)} expectations evaluated, "
             f"{v.get('failed', 0)} failed ({len(v.get('critical_failures', []))} critical, "
             f"{len(v.get('warnings', []))} warnings). Reports: `validation/results.json` and "
             "`validation/data_docs/index.html` (open it locally; it needs no network).", ""]
    lines += _table(["batch", "rows", "result"],
                    [[b, f"{r['rows']:,}", "passed" if r["success"] else "failed"]
                     for b, r in v.get("per_batch", {}).items()])
    if v.get("warnings"):
        lines.append("")
    for w in v.get("warnings", []):
        lines.append(f"- warning [{w['batch']}] {w['expectation']}"
                     f"{' on ' + w['column'] if w.get('column') else ''}: {w['observed']}")
    return lines


def _reproducing(manifest: dict) -> list[str]:
    return ["## Reproducing", "",
            f"Seed {manifest.get('seed')}, tokenizer `{manifest.get('tokenizer', '')}`. Input fingerprints, package "
            "versions and the resolved recipe are in `manifest.json`; "
            "`corpusmill rebuild <this folder> --out DIR` re-runs it and compares every file's sha256."]
