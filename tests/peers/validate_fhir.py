#!/usr/bin/env python3
"""Validate FHIR R4 Bundles with fhir.resources 6.4.0, plus the checks it does not make.

Reads JSON lines of Bundles (or one JSON list of Bundles) from stdin and prints one JSON
object {"<index>": null | "<error>"} on stdout. Run it with the venv python that has
fhir.resources==6.4.0 and pydantic 1.10 (scripts/test sets it up under target/peers/fhir).

fhir.resources checks shapes, required elements, primitive formats (loosely: its date/time
regexes are not anchored at the end). It does not check code values, empty arrays or
invariants, so this script also checks:
  * every `code`-typed element medbus emits against its FHIR R4 value set (CODES below),
    and codes of the fixed code systems medbus writes (SYSTEM_CODES);
  * no empty string, array or object anywhere;
  * date / dateTime / instant values against the full (anchored) FHIR regexes;
  * the transaction shape: type, fullUrl = urn:uuid:<id>, PUT <Type>/<id>, unique ids,
    MessageHeader first, and every relative reference resolving to an entry of the Bundle.
"""
import json
import re
import sys

from fhir.resources import get_fhir_model_class

YEAR = r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)"
TZ = r"(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))"
TIME = r"([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?"
DATE_RE = re.compile(rf"^{YEAR}(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1]))?)?$")
DATETIME_RE = re.compile(
    rf"^{YEAR}(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1])(T{TIME}{TZ})?)?)?$"
)
INSTANT_RE = re.compile(
    rf"^{YEAR}-(0[1-9]|1[0-2])-(0[1-9]|[1-2][0-9]|3[0-1])T{TIME}{TZ}$"
)
CODE_RE = re.compile(r"^[^\s]+(\s[^\s]+)*$")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

GENDER = {"male", "female", "other", "unknown"}
REQUEST_STATUS = {"draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown"}
REQUEST_INTENT = {
    "proposal", "plan", "directive", "order", "original-order", "reflex-order",
    "filler-order", "instance-order", "option",
}
NAME_USE = {"usual", "official", "temp", "nickname", "anonymous", "old", "maiden"}

# (resourceType or "*", dotted path inside the resource) -> allowed codes
CODES = {
    ("Bundle", "type"): {"transaction"},
    ("*", "gender"): GENDER,
    ("Patient", "link.type"): {"replaced-by", "replaces", "refer", "seealso"},
    ("*", "name.use"): NAME_USE,
    ("*", "telecom.system"): {"phone", "fax", "email", "pager", "url", "sms", "other"},
    ("*", "telecom.use"): {"home", "work", "temp", "old", "mobile"},
    ("*", "address.use"): {"home", "work", "temp", "old", "billing"},
    ("*", "address.type"): {"postal", "physical", "both"},
    ("*", "identifier.use"): {"usual", "official", "temp", "secondary", "old"},
    ("Encounter", "status"): {
        "planned", "arrived", "triaged", "in-progress", "onleave", "finished",
        "cancelled", "entered-in-error", "unknown",
    },
    ("Encounter", "location.status"): {"planned", "active", "reserved", "completed"},
    ("Observation", "status"): {
        "registered", "preliminary", "final", "amended", "corrected", "cancelled",
        "entered-in-error", "unknown",
    },
    ("DiagnosticReport", "status"): {
        "registered", "partial", "preliminary", "final", "amended", "corrected",
        "appended", "cancelled", "entered-in-error", "unknown",
    },
    ("AllergyIntolerance", "type"): {"allergy", "intolerance"},
    ("AllergyIntolerance", "category"): {"food", "medication", "environment", "biologic"},
    ("AllergyIntolerance", "criticality"): {"low", "high", "unable-to-assess"},
    ("Immunization", "status"): {"completed", "entered-in-error", "not-done"},
    ("MedicationRequest", "status"): {
        "active", "on-hold", "cancelled", "completed", "entered-in-error", "stopped",
        "draft", "unknown",
    },
    ("MedicationRequest", "intent"): REQUEST_INTENT,
    ("ServiceRequest", "status"): REQUEST_STATUS,
    ("ServiceRequest", "intent"): REQUEST_INTENT,
    ("ServiceRequest", "priority"): {"routine", "urgent", "asap", "stat"},
    ("Appointment", "status"): {
        "proposed", "pending", "booked", "arrived", "fulfilled", "cancelled", "noshow",
        "entered-in-error", "checked-in", "waitlist",
    },
    ("Appointment", "participant.status"): {"accepted", "declined", "tentative", "needs-action"},
    ("Coverage", "status"): {"active", "cancelled", "draft", "entered-in-error"},
    ("DocumentReference", "status"): {"current", "superseded", "entered-in-error"},
    ("DocumentReference", "docStatus"): {"preliminary", "final", "amended", "entered-in-error"},
    ("DocumentReference", "relatesTo.code"): {"replaces", "transforms", "signs", "appends"},
    ("Procedure", "status"): {
        "preparation", "in-progress", "not-done", "on-hold", "stopped", "completed",
        "entered-in-error", "unknown",
    },
    ("Specimen", "status"): {"available", "unavailable", "unsatisfactory", "entered-in-error"},
    ("Location", "status"): {"active", "suspended", "inactive"},
    ("Location", "mode"): {"instance", "kind"},
    ("Provenance", "entity.role"): {"derivation", "revision", "quotation", "source", "removal"},
    ("*", "comparator"): {"<", "<=", ">=", ">"},
}

# codes of the fixed code systems medbus writes, by system
SYSTEM_CODES = {
    "http://terminology.hl7.org/CodeSystem/v3-ActCode": {
        "AMB", "EMER", "FLD", "HH", "IMP", "ACUTE", "NONAC", "OBSENC", "PRENC", "SS", "VR",
    },
    "http://terminology.hl7.org/CodeSystem/v3-NullFlavor": {"UNK", "NI", "NA", "ASKU", "NAV"},
    "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical": {
        "active", "inactive", "resolved",
    },
    "http://terminology.hl7.org/CodeSystem/condition-ver-status": {
        "unconfirmed", "provisional", "differential", "confirmed", "refuted", "entered-in-error",
    },
    "http://terminology.hl7.org/CodeSystem/condition-clinical": {
        "active", "recurrence", "relapse", "inactive", "remission", "resolved",
    },
    "http://terminology.hl7.org/CodeSystem/condition-category": {
        "problem-list-item", "encounter-diagnosis",
    },
    "http://terminology.hl7.org/CodeSystem/location-physical-type": {
        "si", "bu", "wi", "wa", "lvl", "co", "ro", "bd", "ve", "ho", "ca", "rd", "area", "jdn",
    },
    "http://terminology.hl7.org/CodeSystem/v3-ParticipationType": {
        "ADM", "ATND", "CALLBCK", "CON", "DIS", "ESC", "REF", "PPRF", "SPRF", "PART",
        "translator", "emergency",
    },
    "http://terminology.hl7.org/CodeSystem/provenance-participant-type": {
        "enterer", "performer", "author", "verifier", "legal", "attester", "informant",
        "custodian", "assembler", "composer",
    },
    "http://terminology.hl7.org/CodeSystem/v3-DataOperation": {
        "CREATE", "DELETE", "UPDATE", "ABORT", "ACTIVATE", "APPEND", "CANCEL", "COMPLETE",
        "HOLD", "JUMP", "NULLIFY", "OBSOLETE", "REACTIVATE", "RELEASE", "RESUME", "SUSPEND",
    },
    "http://terminology.hl7.org/CodeSystem/coverage-class": {
        "group", "subgroup", "plan", "subplan", "class", "subclass", "sequence", "rxbin",
        "rxpcn", "rxid", "rxgroup",
    },
    "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation": None,  # any token
}

DATE_KEYS = {"birthDate", "expirationDate"}
INSTANT_PATHS = {
    ("Bundle", "timestamp"), ("Provenance", "recorded"), ("Observation", "issued"),
    ("DiagnosticReport", "issued"), ("Appointment", "start"), ("Appointment", "end"),
    ("DocumentReference", "date"),
}
DATETIME_KEYS = {
    "start", "end", "authoredOn", "recordedDate", "receivedTime", "time", "recorded",
    "creation", "occurredDateTime",
}


def walk(value, rtype, path, errors):
    """Check one resource (or the Bundle head) recursively; `path` has no array indices."""
    if isinstance(value, dict):
        if not value:
            errors.append(f"{rtype}.{path}: empty object")
        for k, v in value.items():
            if k == "resource" and rtype == "Bundle":
                continue  # entries are checked as resources of their own
            sub = f"{path}.{k}" if path else k
            walk(v, rtype, sub, errors)
        if "system" in value and "code" in value:
            allowed = SYSTEM_CODES.get(value["system"], ...)
            if allowed is not ... and allowed is not None and value["code"] not in allowed:
                errors.append(f"{rtype}.{path}: code {value['code']!r} not in {value['system']}")
        return
    if isinstance(value, list):
        if not value:
            errors.append(f"{rtype}.{path}: empty array")
        for v in value:
            walk(v, rtype, path, errors)
        return
    if isinstance(value, str):
        if value == "" or value.strip() == "":
            errors.append(f"{rtype}.{path}: empty string")
        key = path.rsplit(".", 1)[-1]
        allowed = CODES.get((rtype, path))
        if allowed is None:
            for (t, p), codes in CODES.items():
                if t == "*" and (path == p or path.endswith("." + p)):
                    allowed = codes
                    break
        if allowed is not None and value not in allowed:
            errors.append(f"{rtype}.{path}: invalid code {value!r}")
        if key == "code" and not CODE_RE.match(value):
            errors.append(f"{rtype}.{path}: code {value!r} has bad whitespace")
        if (rtype, path) in INSTANT_PATHS:
            if not INSTANT_RE.match(value):
                errors.append(f"{rtype}.{path}: bad instant {value!r}")
        elif key in DATE_KEYS:
            if not DATE_RE.match(value):
                errors.append(f"{rtype}.{path}: bad date {value!r}")
        elif key.endswith("DateTime") or key in DATETIME_KEYS:
            if not DATETIME_RE.match(value):
                errors.append(f"{rtype}.{path}: bad dateTime {value!r}")


def references(value, out):
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "reference" and isinstance(v, str):
                out.append(v)
            else:
                references(v, out)
    elif isinstance(value, list):
        for v in value:
            references(v, out)


def check(bundle):
    errors = []
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        return ["not a Bundle"]
    get_fhir_model_class("Bundle").parse_obj(bundle)
    walk(bundle, "Bundle", "", errors)
    entries = bundle.get("entry") or []
    keys = set()
    for i, e in enumerate(entries):
        r = e.get("resource") or {}
        rt, rid = r.get("resourceType"), r.get("id")
        if not rid or not UUID_RE.match(rid):
            errors.append(f"entry {i}: id {rid!r} is not a UUID")
        if e.get("fullUrl") != f"urn:uuid:{rid}":
            errors.append(f"entry {i}: fullUrl {e.get('fullUrl')!r} != urn:uuid:<id>")
        req = e.get("request") or {}
        if req.get("method") != "PUT" or req.get("url") != f"{rt}/{rid}":
            errors.append(f"entry {i}: request {req!r} is not PUT {rt}/{rid}")
        if (rt, rid) in keys:
            errors.append(f"entry {i}: duplicate {rt}/{rid}")
        keys.add((rt, rid))
        walk(r, rt, "", errors)
    if not entries or (entries[0].get("resource") or {}).get("resourceType") != "MessageHeader":
        errors.append("the first entry is not a MessageHeader")
    for e in entries:
        refs = []
        r = dict(e.get("resource") or {})
        # A revised document points to its parent, which lives on the server already.
        r.pop("relatesTo", None)
        references(r, refs)
        for ref in refs:
            parts = ref.split("/")
            if len(parts) != 2 or (parts[0], parts[1]) not in keys:
                errors.append(f"{e['resource']['resourceType']}: reference {ref!r} does not resolve in the Bundle")
    return errors


def main():
    text = sys.stdin.read()
    stripped = text.lstrip()
    if stripped.startswith("["):
        bundles = json.loads(stripped)
    else:
        bundles = [json.loads(line) for line in text.splitlines() if line.strip()]
    result = {}
    for i, b in enumerate(bundles):
        try:
            errs = check(b)
            result[str(i)] = "; ".join(errs[:20]) if errs else None
        except Exception as e:  # pydantic ValidationError and anything unexpected
            result[str(i)] = f"{type(e).__name__}: {e}"[:4000]
    json.dump(result, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
