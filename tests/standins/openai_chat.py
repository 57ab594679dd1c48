#!/usr/bin/env python3
"""A local stand-in for an OpenAI-compatible chat-completions server with vision (vLLM,
SGLang, llama.cpp server, hosted APIs). No VLM can run on the machines this project is tested
on, so the `vlm` engine is tested against this: it speaks the same wire format, validates
requests the way those servers do, and fails the ways they fail. It is NOT a model: it
"looks" at the image by colour (orange-red images are "roadwork"), deterministically.

    python3 openai_chat.py [--host 127.0.0.1] [--port 0] [--api-key KEY]

Prints `listening on http://HOST:PORT/v1` once ready.

Endpoints:
- `POST /v1/chat/completions`: non-streaming chat completions. The user message carries
  text and one `image_url` part (a `data:image/...;base64,` URL, decoded with Pillow: a
  broken image is a 400, as real servers answer). `logprobs: true` with `top_logprobs` (≤ 20)
  returns per-token log-probabilities of the answer's tokens in OpenAI's layout. `stream: true`
  is refused (400). With `--api-key`, a missing or wrong bearer token is a 401.
- `GET /v1/models`: the model list.
- `POST /_control` `{"mode": ..., "delay_ms": N}`: how the next requests are served:
  `ok` (default), `500`, `503`, `429`, `400`, `malformed` (invalid JSON with 200), `empty` (no
  choices), `die` (read the request, close the connection without answering), `slow` (wait
  `delay_ms`, then answer).
- `GET /_stats`: `{"requests": N, "by_model": {...}}` (chat-completion requests received).

Models (the request's `model` field):
- `standin-vl`: answers "Yes" or "No", with log-probabilities when asked.
- `standin-vl-words`: answers with certainty words ("Yes, definitely." / "Probably not.")
  and never returns log-probabilities (as servers without logprob support).
- `standin-vl-think`: a reasoning block first (`<think>...</think>`), then "YES" / "NO".
- `standin-vl-describe`: a description, neither yes nor no.
- `standin-vl-refuse`: OpenAI's structured refusal (`content: null`, `refusal: "..."`).
Any other model name is a 404, as on vLLM.
"""

import argparse
import base64
import io
import json
import math
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image

MODELS = ["standin-vl", "standin-vl-words", "standin-vl-think", "standin-vl-describe", "standin-vl-refuse"]

STATE = {"mode": "ok", "delay_ms": 0, "requests": 0, "by_model": {}}
LOCK = threading.Lock()


def roadwork_probability(img):
    """How orange-red the image is, as P(yes): cones, barriers and work signs are."""
    small = img.convert("RGB").resize((16, 16))
    px = list(small.getdata())
    r = sum(p[0] for p in px) / len(px)
    g = sum(p[1] for p in px) / len(px)
    b = sum(p[2] for p in px) / len(px)
    redness = (r - b) / 255.0 + 0.3 * (g - b) / 255.0
    return 1.0 / (1.0 + math.exp(-8.0 * (redness - 0.35)))


def token(t, lp, alts):
    return {
        "token": t,
        "logprob": lp,
        "bytes": list(t.encode()),
        "top_logprobs": [{"token": a, "logprob": l, "bytes": list(a.encode())} for a, l in alts],
    }


def answer(model, p_yes, want_logprobs, top):
    """The message content, its logprobs (or None), and a refusal (or None)."""
    yes = p_yes >= 0.5
    lp_yes, lp_no = math.log(max(p_yes, 1e-6)), math.log(max(1.0 - p_yes, 1e-6))
    if model == "standin-vl":
        word = "Yes" if yes else "No"
        alts = sorted([("Yes", lp_yes), ("No", lp_no), ("yes", lp_yes - 4.0), ("Maybe", -9.0)], key=lambda a: -a[1])
        lps = [token(word, lp_yes if yes else lp_no, alts[:top])] if want_logprobs else None
        return word, lps, None
    if model == "standin-vl-words":
        if p_yes > 0.85:
            text = "Yes, definitely."
        elif p_yes > 0.5:
            text = "Probably yes."
        elif p_yes > 0.15:
            text = "Probably not."
        else:
            text = "No."
        return text, None, None
    if model == "standin-vl-think":
        word = "YES" if yes else "NO"
        thought = "The user asks about road construction. I see " + ("cones." if yes else "an empty road.")
        content = "<think>" + thought + "</think>\n" + word
        if not want_logprobs:
            return content, None, None
        alts = sorted([("YES", lp_yes), ("NO", lp_no)], key=lambda a: -a[1])
        lps = [token("<think>", -0.01, []), token(thought, -0.5, []), token("</think>", -0.01, []), token("\n", -0.01, [])]
        lps.append(token(word, lp_yes if yes else lp_no, alts[:top]))
        return content, lps, None
    if model == "standin-vl-describe":
        return "The picture shows a street scene with some colours.", None, None
    return None, None, "I'm sorry, I can't help with that request."


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send_json(self, status, obj, raw=None):
        body = raw if raw is not None else json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def error(self, status, message, kind="invalid_request_error"):
        self.send_json(status, {"error": {"message": message, "type": kind, "code": status}})

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n)

    def do_GET(self):
        if self.path == "/v1/models":
            self.send_json(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in MODELS]})
        elif self.path == "/_stats":
            with LOCK:
                self.send_json(200, {"requests": STATE["requests"], "by_model": dict(STATE["by_model"])})
        else:
            self.error(404, f"no route {self.path}")

    def do_POST(self):
        raw = self.read_body()
        if self.path == "/_control":
            c = json.loads(raw or b"{}")
            with LOCK:
                STATE["mode"] = c.get("mode", "ok")
                STATE["delay_ms"] = int(c.get("delay_ms", 0))
            return self.send_json(200, {"mode": STATE["mode"]})
        if self.path != "/v1/chat/completions":
            return self.error(404, f"no route {self.path}")
        try:
            req = json.loads(raw)
        except ValueError as e:
            req = {"invalid": str(e)}
        model = req.get("model")
        with LOCK:
            STATE["requests"] += 1
            STATE["by_model"][model] = STATE["by_model"].get(model, 0) + 1
            mode, delay = STATE["mode"], STATE["delay_ms"]
        if API_KEY and self.headers.get("Authorization") != f"Bearer {API_KEY}":
            return self.error(401, "Incorrect API key provided.", "authentication_error")
        if "invalid" in req:
            return self.error(400, f"invalid JSON body: {req['invalid']}")
        if mode == "die":
            # the server goes away mid-request: no status line, the socket closes
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if mode == "slow":
            time.sleep(delay / 1000.0)
        if mode in ("500", "503", "429"):
            return self.error(int(mode), "The server had an error while processing your request.", "server_error")
        if mode == "400":
            return self.error(400, "This model's maximum context length is 4096 tokens.")
        if mode == "malformed":
            return self.send_json(200, None, raw=b'{"id": "chatcmpl-1", "choices": [{"index": 0, "message": ')
        if model not in MODELS:
            return self.error(404, f"The model `{model}` does not exist.", "NotFoundError")
        if req.get("stream"):
            return self.error(400, "stream=true is not supported by this stand-in")
        top = req.get("top_logprobs")
        want_logprobs = bool(req.get("logprobs"))
        if top is not None and not want_logprobs:
            return self.error(400, "top_logprobs requires logprobs to be true")
        if top is not None and not (0 <= int(top) <= 20):
            return self.error(400, "top_logprobs must be between 0 and 20")
        messages = req.get("messages")
        if not isinstance(messages, list) or not messages:
            return self.error(400, "messages must be a non-empty list")
        image, prompt = None, ""
        for m in messages:
            content = m.get("content")
            if isinstance(content, str):
                prompt += content
                continue
            for part in content or []:
                if part.get("type") == "text":
                    prompt += part.get("text", "")
                elif part.get("type") == "image_url":
                    url = (part.get("image_url") or {}).get("url", "")
                    if not url.startswith("data:image/") or ";base64," not in url:
                        return self.error(400, "image_url must be a base64 data URL")
                    try:
                        image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
                        image.load()
                    except Exception as e:  # noqa: BLE001 - any decode failure is the client's
                        return self.error(400, f"cannot identify image file: {e}")
        if image is None:
            return self.error(400, "this model needs an image in the user message")
        p_yes = roadwork_probability(image)
        content, lps, refusal = answer(model, p_yes, want_logprobs and model != "standin-vl-words", int(top or 0))
        if mode == "empty":
            choices = []
        else:
            msg = {"role": "assistant", "content": content}
            if refusal:
                msg["refusal"] = refusal
            choices = [{"index": 0, "message": msg, "logprobs": {"content": lps} if lps else None, "finish_reason": "stop"}]
        self.send_json(200, {
            "id": f"chatcmpl-{STATE['requests']}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": choices,
            "usage": {"prompt_tokens": 100 + len(prompt) // 4, "completion_tokens": 1, "total_tokens": 101 + len(prompt) // 4},
        })


def main():
    global API_KEY
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--api-key")
    a = ap.parse_args()
    API_KEY = a.api_key
    server = ThreadingHTTPServer((a.host, a.port), Handler)
    server.daemon_threads = True
    host, port = server.server_address[:2]
    print(f"listening on http://{host}:{port}/v1", flush=True)
    server.serve_forever()


API_KEY = None

if __name__ == "__main__":
    main()
