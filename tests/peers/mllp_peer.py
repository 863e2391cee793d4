"""A downstream MLLP receiver for destination tests, built on python-hl7's
asyncio MLLP server (a third-party implementation).

Behaviour is chosen per message by the prefix of its control id (MSH-10), so
that a test drives it through the messages it sends:
  AR...     always answered AR
  NAK...    always answered AE
  AE...     AE the first time, AA after
  LATE...   the first time answered only after --late seconds, AA after
  WRONG...  the first time answered with an ACK naming another message
  DROP...   the first time the connection is closed without an answer
  anything else: AA
--delay adds a pause before every answer (a slow receiver).
Every message received is logged as a JSON line {"control_id", "attempt",
"message"} to --log. Prints "listening PORT" once ready. Optional TLS
(--cert/--key) and client-certificate verification (--client-ca).
"""
import argparse
import asyncio
import json
import ssl
import sys
from collections import Counter

import hl7
from hl7.mllp import start_hl7_server

seen = Counter()


def ack_for(msg, code, control_id=None):
    ack = msg.create_ack(ack_code=code)
    if control_id is not None:
        ack.segment("MSA")[2] = control_id
    if code in ("AE", "AR"):
        # As real receivers do: the error text quotes the patient (MSA-3),
        # which medbus must not copy into its logs.
        try:
            family = str(msg.segment("PID")[5][0][0])
        except (KeyError, IndexError):
            family = "?"
        ack = hl7.parse(str(ack).rstrip("\r") + "|cannot file " + family)
    return ack


async def handle(reader, writer, log, late, delay):
    try:
        while True:
            try:
                msg = await reader.readmessage()
            except asyncio.IncompleteReadError:
                return
            control_id = str(msg.segment("MSH")[10])
            seen[control_id] += 1
            attempt = seen[control_id]
            log.write(json.dumps({"control_id": control_id, "attempt": attempt, "message": str(msg)}) + "\n")
            log.flush()
            first = attempt == 1
            if delay:
                await asyncio.sleep(delay)
            if control_id.startswith("AR"):
                writer.writemessage(ack_for(msg, "AR"))
            elif control_id.startswith("NAK"):
                writer.writemessage(ack_for(msg, "AE"))
            elif control_id.startswith("AE") and first:
                writer.writemessage(ack_for(msg, "AE"))
            elif control_id.startswith("LATE") and first:
                await asyncio.sleep(late)
                writer.writemessage(ack_for(msg, "AA"))
            elif control_id.startswith("WRONG") and first:
                writer.writemessage(ack_for(msg, "AA", control_id="NOT-" + control_id))
            elif control_id.startswith("DROP") and first:
                writer.close()
                return
            else:
                writer.writemessage(ack_for(msg, "AA"))
            await writer.drain()
    except (ConnectionError, OSError):
        return
    finally:
        try:
            writer.close()
        except Exception:  # noqa: BLE001
            pass


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--log", required=True)
    p.add_argument("--late", type=float, default=3.0)
    p.add_argument("--delay", type=float, default=0.0, help="seconds before every answer")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--client-ca")
    a = p.parse_args()
    ctx = None
    if a.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.cert, a.key)
        if a.client_ca:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(a.client_ca)
    log = open(a.log, "a", encoding="utf-8")
    server = await start_hl7_server(
        lambda r, w: handle(r, w, log, a.late, a.delay), host="127.0.0.1", port=a.port, ssl=ctx, encoding="utf-8"
    )
    port = server.sockets[0].getsockname()[1]
    print(f"listening {port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
