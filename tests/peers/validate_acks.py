"""Validate HL7 v2 ACKs strictly with hl7apy (a third-party implementation).

Reads a JSON list of {"name", "ack", "original"} on stdin (the ACK and the
message it answers); prints a JSON object {name: null | "error text"}.
Exit status 0 even when some ACKs fail: the calling Rust test decides.

Strict validation, with three documented exceptions, each checked rather
than skipped:
- v2.3 and older ACKs: MSH-9 has no message-structure component before
  v2.3.1, and hl7apy cannot resolve a message structure without it, so each
  segment (MSH, MSA, ERR) is validated strictly on its own instead.
- A value the ACK copies from the original's MSH (MSH-3..6) that breaks a
  length limit is the sender's, not ours: accepted only if it occurs in the
  original's MSH, and the ACK must then pass tolerant validation.
- An empty MSA-2 is accepted only when the original has no MSH-10.
"""
import json
import re
import sys

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.exceptions import MaxLengthReached
from hl7apy.parser import parse_message, parse_segment


def fields(segment_text, sep):
    return segment_text.split(sep)


def msh_of(text):
    text = text.lstrip("\ufeff")
    return re.split(r"[\r\n]+", text)[0]


def version_tuple(v):
    parts = []
    for p in v.split("."):
        try:
            parts.append(int(p))
        except ValueError:
            return (2, 5, 0)
    while len(parts) < 3:
        parts.append(0)
    return tuple(parts[:3])


def check(ack, original):
    segments = [s for s in ack.split("\r") if s]
    msh = segments[0]
    sep = msh[3]
    f = fields(msh, sep)
    version = f[11].split("^")[0] if len(f) > 11 else "2.5"
    orig_msh = msh_of(original)
    orig_fields = fields(orig_msh, orig_msh[3]) if len(orig_msh) > 3 else []
    original_has_control_id = len(orig_fields) > 9 and orig_fields[9] != ""

    if not original_has_control_id:
        # MSA-2 must then be empty; put a placeholder so that the rest of the
        # ACK is still validated strictly.
        msa = [i for i, s in enumerate(segments) if s.startswith("MSA")][0]
        mf = fields(segments[msa], sep)
        if len(mf) > 2 and mf[2] != "":
            return "MSA-2 is not empty although the original has no MSH-10"
        while len(mf) < 3:
            mf.append("")
        mf[2] = "NONE"
        segments[msa] = sep.join(mf)
        ack = "\r".join(segments) + "\r"

    def validate(level):
        if version_tuple(version) < (2, 3, 1):
            for seg in segments:
                parse_segment(seg, version=version, validation_level=level)
            return None
        msg = parse_message(ack, validation_level=level, find_groups=True)
        if level == VALIDATION_LEVEL.STRICT:
            msg.validate()
        return msg

    try:
        msg = validate(VALIDATION_LEVEL.STRICT)
    except MaxLengthReached as e:
        m = re.search(r"The value (.*) exceed", str(e))
        if not m or m.group(1) not in orig_fields[2:6]:
            raise
        msg = validate(VALIDATION_LEVEL.TOLERANT)
    if not segments[1].startswith("MSA"):
        return "second segment is not MSA"
    if msg is None:
        return None
    if msg.msh.msh_9.msh_9_1.value != "ACK":
        return "MSH-9.1 is not ACK"
    if msg.msa.msa_1.value not in ("AA", "AE", "AR", "CA", "CE", "CR"):
        return "MSA-1 is not an acknowledgment code"
    return None


def main():
    items = json.load(sys.stdin)
    out = {}
    for item in items:
        try:
            out[item["name"]] = check(item["ack"], item.get("original", ""))
        except Exception as e:  # noqa: BLE001 - report every failure kind
            out[item["name"]] = f"{type(e).__name__}: {e}"
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
