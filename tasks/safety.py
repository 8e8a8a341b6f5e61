"""The release's data-safety figures: what each curation control found and did.

Built from the filter and augment stages' reports and the published rows' languages, for
the manifest's `data_safety` and the dataset card's "Data safety" section. Source rows
and generated rows are counted together: both went through the same steps.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from corpusmill.tasks.shards import merge_extra

FILTERING_STAGES = ("filter", "augment")


def step_figures(reports: dict[str, dict], step: str) -> dict:
    """One step's figures summed over the filter and augment stages."""
    total: dict = {}
    for stage in FILTERING_STAGES:
        total = merge_extra(total, reports.get(stage, {}).get("extra", {}).get(step, {}))
    return total


def data_safety(recipe: dict, reports: dict[str, dict], accounting: dict, languages: Counter,
                eval_sets: dict[str, dict]) -> dict[str, Any]:
    """The manifest's `data_safety`: personal data, languages, filter drops, toxicity, contamination
    (`eval_sets`: the index's counts per eval set, `items_total` among them)."""
    steps = {s["step"]: s for s in recipe.get("filters", [])}
    return {
        "personal_data": _personal_data(steps.get("pii"), step_figures(reports, "pii")),
        "languages": dict(sorted(languages.items(), key=lambda kv: (-kv[1], kv[0]))),
        "filter_drops": _filter_drops(accounting),
        "toxicity": step_figures(reports, "toxicity") if "toxicity" in steps else None,
        "contamination": _contamination(recipe.get("decontaminate", []), step_figures(reports, "decontaminate"),
                                        eval_sets),
    }


def _personal_data(pii: dict | None, figures: dict) -> dict | None:
    if pii is None:
        return None
    actions = pii.get("actions") or {}
    return {kind: {"action": actions.get(kind, pii.get("action")), **counts} for kind, counts in sorted(figures.items())
            if isinstance(counts, dict)}


def _filter_drops(accounting: dict) -> dict[str, dict[str, int]]:
    """Rows each step dropped, by rule: `filter.gopher.x` and `augment.gopher.x` add up under gopher.x."""
    drops: dict[str, Counter] = {}
    for key, n in accounting.get("dropped", {}).items():
        stage, _, reason = key.partition(".")
        if stage in FILTERING_STAGES and "." in reason:  # augment's own gates have no step prefix
            step, _, rule = reason.partition(".")
            drops.setdefault(step, Counter())[rule] += n
    return {step: dict(sorted(rules.items())) for step, rules in sorted(drops.items())}


def _contamination(evals: list[dict], figures: dict, eval_sets: dict[str, dict]) -> dict[str, dict]:
    out = {}
    for ev in evals:
        f = figures.get(ev["name"], {})
        found, total = len(f.get("items", {})), eval_sets.get(ev["name"], {}).get("items_total", 0)
        out[ev["name"]] = {"policy": ev["policy"], "rows_dropped": f.get("rows_dropped", 0),
                           "rows_cut": f.get("rows_cut", 0), "items_found": found, "items_total": total}
    return out


def without_item_lists(reports: dict[str, dict]) -> dict[str, dict]:
    """The reports with decontamination's per-item hit lists replaced by their length: the
    lists only exist so shards add up, and would fill the manifest."""
    out = {}
    for stage, report in reports.items():
        evals = report.get("extra", {}).get("decontaminate")
        if evals:
            compact = {name: {**({k: v for k, v in f.items() if k != "items"}), "items_found": len(f.get("items", {}))}
                       for name, f in evals.items()}
            report = {**report, "extra": {**report["extra"], "decontaminate": compact}}
        out[stage] = report
    return out
