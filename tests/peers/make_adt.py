"""Build a v2.5 ADT^A01 with hl7apy's message structures and print it (CR
separators) — a message medbus did not write, for interoperability tests."""
import sys

from hl7apy.core import Message

control_id = sys.argv[1] if len(sys.argv) > 1 else "HL7APY0001"
m = Message("ADT_A01", version="2.5")
m.msh.msh_3 = "HL7APY"
m.msh.msh_4 = "PYHOSP"
m.msh.msh_5 = "MEDBUS"
m.msh.msh_6 = "HUB"
m.msh.msh_7 = "20261124101500"
m.msh.msh_9 = "ADT^A01^ADT_A01"
m.msh.msh_10 = control_id
m.msh.msh_11 = "P"
m.evn.evn_2 = "20261124101500"
m.pid.pid_3 = "12345^^^PYHOSP^MR"
m.pid.pid_5 = "EVERYMAN^ADAM"
m.pid.pid_7 = "19700101"
m.pid.pid_8 = "M"
m.pv1.pv1_2 = "I"
sys.stdout.write(m.to_er7())
