#!/usr/bin/env python3
"""Validate FHIR R4 resources of any type (gateway responses: resources, searchset and
history Bundles, CapabilityStatement, OperationOutcome) with fhir.resources 6.4.0, plus the
code-value, empty-element and date checks of validate_fhir.py applied to each resource.

Reads JSON lines from stdin; prints {"<index>": null | "<error>"}. Run with the venv python
that has fhir.resources==6.4.0 (target/peers/fhir).
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fhir.resources import get_fhir_model_class  # noqa: E402
from validate_fhir import walk  # noqa: E402

# Types whose contents medbus passes through or builds itself without code tables there.
NO_CODE_WALK = {"CapabilityStatement", "Parameters"}


def check(r):
    errors = []
    if not isinstance(r, dict) or "resourceType" not in r:
        return ["not a resource"]
    get_fhir_model_class(r["resourceType"]).parse_obj(r)
    rtype = r["resourceType"]
    if rtype == "Bundle":
        for e in r.get("entry") or []:
            res = e.get("resource")
            if res and res.get("resourceType") not in NO_CODE_WALK:
                walk(res, res["resourceType"], "", errors)
    elif rtype not in NO_CODE_WALK:
        walk(r, rtype, "", errors)
    return errors


def main():
    result = {}
    lines = [l for l in sys.stdin.read().splitlines() if l.strip()]
    for i, line in enumerate(lines):
        try:
            errs = check(json.loads(line))
            result[str(i)] = "; ".join(errs[:20]) if errs else None
        except Exception as e:
            result[str(i)] = f"{type(e).__name__}: {e}"[:4000]
    json.dump(result, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
