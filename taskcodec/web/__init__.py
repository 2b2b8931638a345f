"""The page ``taskcodec serve`` hands a browser: a photo coded in the browser, sent as bytes, labelled here.

    GET /                    the page (static/index.html)
    GET /web/<file>          its JavaScript and CSS (static/)
    GET /web/ort/<file>      onnxruntime-web's wasm build, from ``npm ci`` into node_modules/ (see below)
    GET /web/client.json     the client's tables and preprocessing (from client-<id>.npz), limits, the JPEG peer
    GET /web/client.onnx     the client's analysis transform (client-<id>.onnx)

The page runs ``client-<id>.onnx`` in onnxruntime-web (wasm), range-codes the latent with
``static/coder.js`` into the container ``taskcodec compress`` writes, and POSTs it to
``/v1/classify``. Nothing is fetched from outside the server: onnxruntime-web is installed from
``package-lock.json`` beside this file with ``npm ci`` (``.ci/run`` does it), because its wasm is
11 MB of build output that belongs to a lockfile, not to git; the server serves the three files the
page needs from there, and without them the page says how to install them.

The JPEG peer: ``--results-table`` names an ``evaluate.py`` ``rate_accuracy.csv``; the page then
encodes the same model input as a JPEG at the lowest quality whose top-1 in that table is not
significantly below the reference's (the paired 95% interval reaches 0), and shows its size beside
the bytes sent. An export carries no results table, so without the option the page says so.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

from taskcodec.errors import CheckpointError, ConfigError
from taskcodec.io import DEFAULT_MAX_PIXELS

STATIC = Path(__file__).resolve().parent / "static"
ORT_DIST = Path(__file__).resolve().parent / "node_modules" / "onnxruntime-web" / "dist"
#: the onnxruntime-web files the page loads: the wasm-only ES module and its wasm runtime
ORT_FILES = {
    "ort.wasm.min.mjs": "text/javascript",
    "ort-wasm-simd-threaded.mjs": "text/javascript",
    "ort-wasm-simd-threaded.wasm": "application/wasm",
}
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".png": "image/png"}
NO_CACHE = {"Cache-Control": "no-cache"}


def find_client(decoder_path: str | os.PathLike | None, codec_id: str, client: str | os.PathLike | None = None) -> Path | None:
    """The ``client-<id>.onnx`` to serve: ``client`` if given, else the one beside the server's model file, else ``None``."""
    if client is None and decoder_path is None:  # a model loaded in-process: no file to look beside
        return None
    if client is None:
        beside = Path(decoder_path).resolve().parent / f"client-{codec_id}.onnx"
        return beside if beside.is_file() and beside.with_suffix(".npz").is_file() else None
    path = Path(client)
    if not path.is_file() or not path.with_suffix(".npz").is_file():
        raise CheckpointError(f"{path} and {path.with_suffix('.npz').name} beside it are needed; make them with "
                              "`taskcodec export ENCODER --onnx`")  # fmt: skip
    return path


def client_manifest(onnx_path: str | os.PathLike) -> dict:
    """What the page needs besides the ONNX model: the entropy tables, medians, stride and preprocessing."""
    npz = Path(onnx_path).with_suffix(".npz")
    try:
        with np.load(npz, allow_pickle=False) as t:
            tables = {k: t[k] for k in t.files}
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {npz}: {e}; re-export it with `taskcodec export ENCODER --onnx`") from e
    lengths = tables["cdf_lengths"].astype(int).tolist()
    return {
        "version": int(tables["version"]),
        "codec_id": str(tables["codec_id"]),
        "family": str(tables["family"]),
        "stride": int(tables["stride"]),
        "cdfs": [row[:n] for row, n in zip(tables["cdfs"].astype(int).tolist(), lengths, strict=True)],
        "cdf_lengths": lengths,
        "offsets": tables["offsets"].astype(int).tolist(),
        "medians": tables["medians"].astype(float).tolist(),
        "preprocessing": json.loads(str(tables["preprocessing"])),
    }


def jpeg_peer(table: str | os.PathLike) -> dict:
    """The JPEG quality that reaches the reference's top-1 in an ``evaluate.py`` rate_accuracy.csv.

    The reference is the ``none`` row (raw pixels); the peer is the lowest JPEG quality whose paired
    95% interval against it reaches 0 (``diff_ci95_hi >= 0``), or, in a table without intervals, whose
    top-1 is at least the reference's. If no quality reaches it, the highest one is named and flagged.
    """
    path = Path(table)
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise ConfigError(f"cannot read the results table {path}: {e}") from e
    reference = next((r for r in rows if r.get("codec") == "none"), None)
    jpegs = sorted(((int(r["setting"].split("=")[1]), r) for r in rows if r.get("codec") == "jpeg"
                    and str(r.get("setting", "")).startswith("q=")), key=lambda qr: qr[0])  # fmt: skip
    if reference is None or not jpegs:
        raise ConfigError(f"{path} has no reference row (codec 'none') or no JPEG rows (codec 'jpeg', setting 'q=N'); "
                          "pass a rate_accuracy.csv written by evaluate.py")  # fmt: skip
    ref_top1 = float(reference["top1"])

    def reaches(row: dict) -> bool:
        hi = row.get("diff_ci95_hi")
        return float(hi) >= 0.0 if hi not in (None, "", "nan") else float(row["top1"]) >= ref_top1

    quality, row = next(((q, r) for q, r in jpegs if reaches(r)), jpegs[-1])
    return {"quality": quality, "top1": float(row["top1"]), "reference_top1": ref_top1, "reaches": reaches(row),
            "table": path.name, "n": int(float(row["n"])) if row.get("n") else None}  # fmt: skip


def mount_web(app, decoder_path: str | os.PathLike | None, codec_id: str, client: str | os.PathLike | None = None,
              results_table: str | os.PathLike | None = None, max_body: int | None = None) -> None:  # fmt: skip
    """Add the page and its files to a FastAPI ``app`` serving decoder ``codec_id``; checked at start-up."""
    from fastapi.responses import FileResponse, JSONResponse, Response

    onnx_path = find_client(decoder_path, codec_id, client)
    manifest = client_manifest(onnx_path) if onnx_path else None
    if manifest and manifest["codec_id"] != codec_id:
        raise ConfigError(f"{onnx_path} is the client of model {manifest['codec_id']}, but this server decodes model "
                          f"{codec_id}; pass client-{codec_id}.onnx")  # fmt: skip
    peer = jpeg_peer(results_table) if results_table else None
    info = {"model": codec_id, "max_pixels": DEFAULT_MAX_PIXELS, "max_body": max_body, "jpeg_peer": peer,
            "runtime_installed": all((ORT_DIST / name).is_file() for name in ORT_FILES)}  # fmt: skip

    def missing(what: str) -> JSONResponse:
        return JSONResponse({"error": what}, status_code=404, headers=NO_CACHE)

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=NO_CACHE)

    @app.get("/web/client.json", include_in_schema=False)
    async def client_json():
        if manifest is None:
            return missing(f"this server has no browser client for model {codec_id}: export one with "
                           f"`taskcodec export ENCODER --onnx` and put client-{codec_id}.onnx (+ .npz) beside the "
                           "decoder, or pass `taskcodec serve --client client-<id>.onnx`")  # fmt: skip
        return JSONResponse({**info, "client": manifest}, headers=NO_CACHE)

    @app.get("/web/client.onnx", include_in_schema=False)
    async def client_onnx():
        if onnx_path is None:
            return missing(f"this server has no browser client for model {codec_id}")
        return FileResponse(onnx_path, media_type="application/octet-stream", headers=NO_CACHE)

    @app.get("/web/ort/{name}", include_in_schema=False)
    async def runtime(name: str):
        if name not in ORT_FILES:
            return missing(f"{name} is not one of the runtime files the page uses")
        if not (ORT_DIST / name).is_file():
            return missing("onnxruntime-web is not installed beside the server: run `npm ci --ignore-scripts` in "
                           f"{ORT_DIST.parents[1]}")  # fmt: skip
        return FileResponse(ORT_DIST / name, media_type=ORT_FILES[name])

    @app.get("/web/{name}", include_in_schema=False)
    async def static(name: str):
        path = STATIC / name
        if "/" in name or name.startswith(".") or path.suffix not in STATIC_TYPES or not path.is_file():
            return Response(status_code=404)
        return FileResponse(path, media_type=STATIC_TYPES[path.suffix], headers=NO_CACHE)
