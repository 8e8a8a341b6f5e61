"""Rebuild checks: does a fresh build of a release's recorded recipe give the same bytes?

`flows/rebuild.py` runs the build; this module compares the original manifest with the
rebuilt one: every data file's sha256, the fingerprint, and each input's content
fingerprint, so a mismatch can be traced to the inputs that changed (or, when none did,
to the code and package versions recorded beside them).
"""

from __future__ import annotations

from corpusmill.tasks.publish import compare_files


def compare(original: dict, rebuilt: dict) -> dict:
    """A JSON-friendly report; `identical` is True iff every data file has the same sha256."""
    files = compare_files(original["files"], rebuilt["files"])
    new_inputs = {i["name"]: i for i in rebuilt.get("inputs", [])}
    inputs = []
    for old in original.get("inputs", []):
        new = new_inputs.pop(old["name"], None)
        new_units = {u["label"]: u["fingerprint"] for u in (new or {}).get("units", [])}
        old_units = {u["label"]: u["fingerprint"] for u in old.get("units", [])}
        changed_units = sorted(label for label in old_units.keys() | new_units.keys()
                               if old_units.get(label) != new_units.get(label))
        inputs.append({"name": old["name"], "expected": old["fingerprint"],
                       "actual": new["fingerprint"] if new else None,
                       "changed": new is None or new["fingerprint"] != old["fingerprint"],
                       "changed_units": changed_units})
    inputs += [{"name": n, "expected": None, "actual": i["fingerprint"], "changed": True, "changed_units": []}
               for n, i in sorted(new_inputs.items())]
    packages = {name: {"expected": v, "actual": rebuilt.get("packages", {}).get(name)}
                for name, v in original.get("packages", {}).items()
                if rebuilt.get("packages", {}).get(name) != v}
    return {
        "name": original["name"],
        "version": original["version"],
        "identical": all(f["status"] == "same" for f in files) and original["fingerprint"] == rebuilt["fingerprint"],
        "fingerprint": {"expected": original["fingerprint"], "actual": rebuilt["fingerprint"]},
        "files": files,
        "inputs": inputs,
        "changed_inputs": [i["name"] for i in inputs if i["changed"]],
        "code_version": {"expected": original.get("code_version"), "actual": rebuilt.get("code_version")},
        "packages_changed": packages,
    }


def summary_line(report: dict) -> str:
    """One paragraph: identical, or what differs and the likely cause."""
    files = report["files"]
    same = sum(f["status"] == "same" for f in files)
    if report["identical"]:
        return (f"identical: all {len(files)} data files of {report['name']} {report['version']} match "
                f"(fingerprint {report['fingerprint']['actual']}).")
    bad = [f"{f['path']} ({f['status']})" for f in files if f["status"] != "same"]
    if report["changed_inputs"]:
        cause = f"inputs whose content changed: {', '.join(report['changed_inputs'])}"
    else:
        code = report["code_version"]
        cause = f"no input changed; compare code_version ({code['expected']} -> {code['actual']}) and package versions"
        changed = [f"{k} {v['expected']} -> {v['actual']}" for k, v in report["packages_changed"].items()]
        if changed:
            cause += f" ({', '.join(changed)})"
    return (f"different: {same} of {len(files)} data files of {report['name']} {report['version']} match; "
            f"differing: {', '.join(bad)}. {cause}.")
