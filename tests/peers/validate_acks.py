"""Validate HL7 v2 ACKs strictly with hl7apy (a third-party implementation).

Reads a JSON list of {"name": str, "ack": str} on stdin; prints a JSON object
{name: null | "error text"}. Exit status 0 even when some ACKs fail: the
calling Rust test decides.
"""
import json
import sys

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message


def check(ack: str):
    msg = parse_message(ack, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    msg.validate()
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
            out[item["name"]] = check(item["ack"])
        except Exception as e:  # noqa: BLE001 - report every failure kind
            out[item["name"]] = f"{type(e).__name__}: {e}"
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
