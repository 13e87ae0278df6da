"""A local OpenAI-compatible judge that answers from a script (stdlib only, runs in a thread).

``behaviour(system, user) -> str | int | None``: the reply text, an HTTP error status to answer
with (an OpenAI-style error body), or None to stall past the client's timeout. Every request body
is recorded in ``requests``. It gives no log probabilities; with ``refuse_logprobs`` a request that
asks for them gets a 400 saying so, as some endpoints answer.
"""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@contextmanager
def fake_judge(behaviour, stall_seconds: float = 3.0, refuse_logprobs: bool = False):
    requests: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            requests.append(body)
            messages = {m["role"]: m["content"] for m in body["messages"]}
            reply = behaviour(messages.get("system", ""), messages.get("user", ""))
            if refuse_logprobs and body.get("logprobs"):
                reply = "logprobs"
            if reply is None:
                time.sleep(stall_seconds)
                return
            status = reply if isinstance(reply, int) else 400 if reply == "logprobs" else 200
            refusal = "logprobs are not supported by this model" if reply == "logprobs" else \
                "This model's maximum context length is 8192 tokens"
            data = json.dumps({"error": {"message": refusal, "type": "invalid_request_error", "code": None}}
                              if status != 200 else
                              {"id": "j", "object": "chat.completion", "created": 0, "model": body["model"],
                               "choices": [{"index": 0, "finish_reason": "stop",
                                            "message": {"role": "assistant", "content": reply}}]}).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", requests
    finally:
        server.shutdown()


def response(user: str, label: str) -> str:
    """The text the judge was shown as Response/Conversation ``label`` ('A' or 'B')."""
    for header in (f"[Response {label}]", f"[Conversation {label}]"):
        if header in user:
            rest = user.split(header, 1)[1]
            return rest.split("[Response B]")[0].split("[Conversation B]")[0].split("Which")[0]
    return ""
