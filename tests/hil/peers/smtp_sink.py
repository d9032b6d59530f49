"""An SMTP server (aiosmtpd) that prints each message it accepts as one JSON line.

Usage: smtp_sink.py  -> prints "READY 127.0.0.1:PORT", then "MAIL {json}" per message
with the envelope, the decoded subject, the sender and the text body.
"""
import asyncio
import email
import email.policy
import json
import socket
import time

from aiosmtpd.controller import Controller


class Printer:
    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        body = message.get_body(preferencelist=("plain",))
        print(
            "MAIL "
            + json.dumps(
                {
                    "mail_from": envelope.mail_from,
                    "rcpt_tos": envelope.rcpt_tos,
                    "from": str(message["From"]),
                    "to": str(message["To"]),
                    "subject": str(message["Subject"]),
                    "body": body.get_content() if body is not None else "",
                },
                ensure_ascii=False,
            ),
            flush=True,
        )
        return "250 Message accepted for delivery"


def main():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    controller = Controller(Printer(), hostname="127.0.0.1", port=port)
    controller.start()
    print(f"READY 127.0.0.1:{port}", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
