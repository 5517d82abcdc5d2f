"""A webhook receiver that verifies notifykit's signatures and prints the events.

Run it, then point a notifier at it (``http://127.0.0.1:8088/hook?secret=S``)::

    python examples/webhook_receiver.py --port 8088 --secret S

Requests whose ``Notifykit-Signature`` does not verify (wrong key, tampered body, replay
older than 5 minutes) get 401 and are not printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn

from notifykit.signing import SignatureError, verify
from notifykit.transport import decode_message

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


def make_app(secret: str) -> Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
                                      Awaitable[None]]:
    async def app(scope: Scope, receive: Callable[[], Awaitable[Message]],
                  send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            verify(headers, body, secret)
        except SignatureError as exc:
            print(f"rejected: {exc}", flush=True)
            status = 401
        else:
            content_type = headers.get("content-type", "")
            if content_type.startswith("application/cloudevents-batch+json"):
                events = [decode_message(json.dumps(e)) for e in json.loads(body)]
            elif "ce-id" in headers:  # CloudEvents binary mode: attributes in headers
                events = [{"event_type": headers["ce-type"], "message_id": headers["ce-id"],
                           "payload": json.loads(body)}]
            else:
                events = [decode_message(body)]
            for event in events:
                print(f"{event['event_type']} {event['message_id']} {json.dumps(event['payload'])}", flush=True)
            status = 204
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=8088)
    parser.add_argument("--secret", required=True)
    args = parser.parse_args()
    print(f"listening on http://127.0.0.1:{args.port}/", file=sys.stderr, flush=True)
    uvicorn.run(make_app(args.secret), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
