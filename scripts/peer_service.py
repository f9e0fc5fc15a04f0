#!/usr/bin/env python3
"""The Python peer of `livecheck serve`: the same recipe (recipe.py, onnxruntime + OpenCV) behind
FastAPI + uvicorn with several worker processes, as teams deploy it. Used only by the side-by-side
load bench (benches/versus.rs via scripts/loadbench.sh); it stores nothing (no audit trail), which
favours it.

    peer_service.py MODEL_DIR PORT [WORKERS]

POST /api/onboarding/biometrics/face/liveliness_check/ {"image": "<base64 or data URI>"} answers
the Adhere success envelope with `confidence`; GET /healthz answers {"status": "ok"}.

TCP_NODELAY: stock uvicorn with several workers answers a kept-alive request in two writes
(headers, then body), and on some setups the second waits for the client's delayed ACK (about
40 ms per request). Every accepted connection gets TCP_NODELAY here (in each worker, by wrapping the
HTTP protocols' connection_made), so the comparison measures the recipe and the server, not Nagle.
"""
import base64, binascii, os, socket, sys

import cv2
import numpy as np
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from recipe import Recipe  # noqa: E402


def _nodelay_on_connect(protocol_cls):
    original = protocol_cls.connection_made

    def connection_made(self, transport):
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        original(self, transport)

    protocol_cls.connection_made = connection_made


from uvicorn.protocols.http.h11_impl import H11Protocol  # noqa: E402

_nodelay_on_connect(H11Protocol)
try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol  # noqa: E402

    _nodelay_on_connect(HttpToolsProtocol)
except ImportError:
    pass

CHECK = "/api/onboarding/biometrics/face/liveliness_check/"
app = FastAPI()
_recipe = None


def recipe():
    global _recipe
    if _recipe is None:
        _recipe = Recipe(os.environ["PEER_MODEL_DIR"], os.environ.get("PEER_MODEL_SET") or None)
    return _recipe


def failed(status, message):
    return JSONResponse({"status": "failed", "data": [], "message": message}, status_code=status)


@app.get("/healthz")
def healthz():
    return {"status": "ok"}


@app.post(CHECK)
def check(body: dict):
    # A sync handler: FastAPI runs it on its thread pool, so the event loop keeps accepting.
    image = body.get("image")
    if not isinstance(image, str) or not image:
        return failed(400, "Missing required fields")
    if image.startswith("data:"):
        image = image.split(",", 1)[-1]
    try:
        raw = base64.b64decode(image, validate=True)
    except (binascii.Error, ValueError):
        return failed(400, "image is not valid base64")
    img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        return failed(400, "The image is not a valid image file")
    p_real, bbox = recipe().check(img)
    live = p_real >= 0.5
    return {"status": "success",
            "data": {"status": live, "detail": "Liveliness Detected" if live else "Liveliness Not Detected",
                     "response_code": "00", "confidence": p_real, "confidence_in_percentage": p_real * 100,
                     "face": {"bbox": bbox}},
            "message": "Face Liveliness successful" if live else "Face Liveliness failed"}


if __name__ == "__main__":
    model_dir, port = sys.argv[1], int(sys.argv[2])
    workers = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    os.environ["PEER_MODEL_DIR"] = os.path.abspath(model_dir)
    # One inference thread per worker, as livecheck runs one check per core.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    uvicorn.run("peer_service:app", host="127.0.0.1", port=port, workers=workers,
                app_dir=os.path.dirname(os.path.abspath(__file__)), log_level="warning",
                access_log=False)
