"""A scripted Hugging Face hub for sizes on cue (offline the hub gives none): `GET /api/models/ID`
answers one safetensors file of the given size and a config.json. Point HF_ENDPOINT at `url`."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PETABYTE = 10**15  # more than any test machine's disk


class ScriptedHub:
    def __init__(self, size: int) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                repo_id = self.path.split("?")[0].removeprefix("/api/models/")
                body = json.dumps({"id": repo_id, "sha": "0" * 40, "siblings": [
                    {"rfilename": "model.safetensors", "size": size}, {"rfilename": "config.json", "size": 1000}]})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
