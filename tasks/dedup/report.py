"""The dedup stage report as Markdown, for a Prefect artifact or the dataset card."""

from __future__ import annotations

from corpusmill.tasks.dedup.clusters import EXACT, NEAR


def report_markdown(report: dict) -> str:
    """A summary paragraph, then `report_details`."""
    extra = report.get("extra", {})
    curve = extra.get("s_curve", {})
    dropped = report.get("dropped", {})
    lines = [
        f"{report['rows_in']:,} rows in, {report['rows_out']:,} out: {dropped.get(EXACT, 0):,} exact and "
        f"{dropped.get(NEAR, 0):,} near duplicates removed.",
        "",
        f"MinHash LSH with {curve.get('bands', '?')} bands x {curve.get('rows_per_band', '?')} rows, chosen for "
        f"recall {curve.get('recall_target', '?')} at Jaccard {curve.get('threshold', '?')} (theoretical "
        f"{curve.get('recall_at_threshold', '?')}). {extra.get('candidate_pairs', 0):,} candidate pairs, each verified "
        f"by exact Jaccard: {extra.get('verified_pairs', 0):,} kept, {extra.get('rejected_pairs', 0):,} rejected, "
        f"{extra.get('refused_by_cap', 0):,} refused by the cluster cap of {extra.get('max_cluster_size', '?')} texts. "
        f"{extra.get('clusters', 0):,} clusters, the largest of {extra.get('largest_cluster', 1)} rows.",
    ]
    return "\n".join(lines + ["", report_details(report)])


def report_details(report: dict) -> str:
    """The S-curve, the cluster size histogram and example pairs, as Markdown tables."""
    extra = report.get("extra", {})
    curve = extra.get("s_curve", {})
    lines = [f"Banding {curve.get('bands', '?')} x {curve.get('rows_per_band', '?')} chosen for recall "
             f"{curve.get('recall_target', '?')} at Jaccard {curve.get('threshold', '?')}; clusters capped at "
             f"{extra.get('max_cluster_size', '?')} distinct texts ({extra.get('refused_by_cap', 0):,} verified pairs refused)."]
    if curve.get("curve"):
        lines += ["", "| Jaccard | P(candidate) |", "|---:|---:|"]
        lines += [f"| {p['jaccard']:.2f} | {p['p_candidate']:.4f} |" for p in curve["curve"]]
    if extra.get("cluster_sizes"):
        lines += ["", "| cluster size (rows) | clusters |", "|---|---:|"]
        lines += [f"| {k} | {v:,} |" for k, v in extra["cluster_sizes"].items()]
    examples = extra.get("examples", []) + extra.get("rejected_examples", [])
    if examples:
        lines += ["", "| a | b | Jaccard | joined |", "|---|---|---:|---|"]
        lines += [f"| {e['a']} | {e['b']} | {e['jaccard']:.4f} | {'yes' if e in extra.get('examples', []) else 'no'} |"
                  for e in examples]
    return "\n".join(lines)
