"""A local SMTP server for tests/notify.rs (needs `pip install aiosmtpd`).

Usage: smtp_sink.py PORT OUTDIR. Listens on 127.0.0.1:PORT; each message accepted is
written as OUTDIR/NNNN.eml (the DATA as received) and OUTDIR/NNNN.json (envelope: from,
to). Recipients whose local part is "tempfail" get 451, "permfail" 550. Prints READY
once listening; exits 3 when aiosmtpd is missing, 4 when the port cannot be bound, and
when its standard input closes.
"""
import json
import os
import sys

try:
    from aiosmtpd.controller import Controller
except ImportError:
    print("aiosmtpd is missing: pip install aiosmtpd", file=sys.stderr, flush=True)
    sys.exit(3)


class Sink:
    def __init__(self, outdir):
        self.outdir = outdir
        self.count = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@", 1)[0]
        if local == "tempfail":
            return "451 4.3.0 try again later"
        if local == "permfail":
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        stem = os.path.join(self.outdir, "%04d" % self.count)
        with open(stem + ".eml.tmp", "wb") as f:
            f.write(envelope.original_content)
        os.rename(stem + ".eml.tmp", stem + ".eml")
        with open(stem + ".json.tmp", "w") as f:
            json.dump({"from": envelope.mail_from, "to": envelope.rcpt_tos}, f)
        os.rename(stem + ".json.tmp", stem + ".json")
        return "250 Message accepted for delivery"


def main():
    port = int(sys.argv[1])
    outdir = sys.argv[2]
    controller = Controller(Sink(outdir), hostname="127.0.0.1", port=port)
    try:
        controller.start()
    except Exception as e:  # the port is taken, most likely
        print("cannot listen on 127.0.0.1:%d: %s" % (port, e), file=sys.stderr, flush=True)
        sys.exit(4)
    print("READY", flush=True)
    try:
        sys.stdin.read()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
