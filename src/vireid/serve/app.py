"""The REST API and web page over a GalleryIndex (FastAPI; optional extra `vireid[serve]`).

Endpoints: POST /search (multipart image + modality + topk) -> {"results": [...]} best first;
GET /items/{id}/image; POST /items (adds an image; needs the API key); GET /health; GET / (web page);
OpenAPI docs at /docs.

Uploads are bounded before they cost anything: a request body over the limit is refused from its
Content-Length (or as soon as the streamed body passes it), POST /items is refused without a valid
key before its body is read, an image whose header declares more pixels than the limit is refused
before it is decoded, and decoding, embedding and writing run in worker threads, never on the event
loop; embedding goes through one worker thread that batches concurrent queries (`EmbedBatcher`: a
lone query goes straight through, up to `batch_size` queued ones share a forward pass). Uploaded
images are decoded rather than trusted by name (400), checked for modality (422) and stored only
inside <index>/images/ under their content hash; the same image and modality posted again returns
the item already stored (a retry adds no duplicate). Adds commit through the index's writer lock,
so a CLI `vireid index add` running beside the service loses nothing, and the service reloads the
index when another writer changed it on disk.
"""


import hashlib
import hmac
import io
import json
import os
import threading
from pathlib import Path
from typing import Annotated, Any

from ..core import GalleryIndexError, Modality, ModalityError, StorageError, VireidError
from .batching import EmbedBatcher

API_KEY_ENV = "VIREID_API_KEY"
_FORMAT_EXT = {"JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp"}
DEFAULT_MAX_UPLOAD_MB = 10.0
DEFAULT_MAX_MEGAPIXELS = 25.0  # 5000 x 5000: far above any person crop, far below what exhausts memory
_FORM_OVERHEAD = 64 * 1024  # multipart boundaries and the other form fields (tags are at most 16 KiB)
DEFAULT_BATCH_SIZE = 16  # concurrent /search queries embedded in one forward pass at most
DEFAULT_BATCH_WAIT_MS = 2.0  # how long a forming batch waits for queries still being decoded
INLINE_SEARCH_ROWS = 20_000  # below this gallery size a search runs on the event loop (well under a millisecond)


class UploadTooLarge(ValueError):
    """An upload over the byte or pixel limit (HTTP 413)."""


def _require_fastapi() -> Any:
    try:
        import fastapi
    except ImportError as exc:
        raise VireidError("the service needs FastAPI and uvicorn, which are not installed; "
                          "run `pip install vireid[serve]`") from exc
    return fastapi


def read_api_key(api_key: str | None = None, api_key_file: str | Path | None = None) -> str | None:
    """The key for POST /items: given, else the one line of `api_key_file`, else $VIREID_API_KEY."""
    if api_key:
        return api_key
    if api_key_file is not None:
        try:
            lines = [ln.strip() for ln in Path(api_key_file).read_text().splitlines() if ln.strip()]
        except OSError as exc:
            raise VireidError(f"cannot read the API key file {api_key_file}: {exc.strerror or exc}") from None
        if not lines:
            raise VireidError(f"the API key file {api_key_file} is empty")
        if len(lines) > 1:
            raise VireidError(f"the API key file {api_key_file} has {len(lines)} non-empty lines; write the key "
                              "alone on one line")
        return lines[0]
    return os.environ.get(API_KEY_ENV) or None


def key_matches(key: str | None, given: str | None) -> bool:
    """Constant-time comparison of the configured key and a request's X-API-Key (no key configured: refused)."""
    return key is not None and given is not None and hmac.compare_digest(given.encode(), key.encode())


def decode_upload(data: bytes, max_pixels: float = DEFAULT_MAX_MEGAPIXELS * 1e6) -> tuple[Any, str]:
    """(RGB PIL image, Pillow format) of uploaded bytes; UploadTooLarge when the header declares more than
    `max_pixels` pixels (checked before decoding), ValueError when the bytes are not a complete image."""
    from PIL import Image, UnidentifiedImageError

    from ..data.images import to_rgb

    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format or ""
            if fmt not in _FORMAT_EXT:
                raise ValueError(f"unsupported image format {fmt or 'unknown'}; send JPEG, PNG or BMP")
            w, h = img.size
            if w * h > max_pixels:
                raise UploadTooLarge(f"the image is {w}x{h} ({w * h / 1e6:.1f} megapixels); the service takes at most "
                                     f"{max_pixels / 1e6:g} megapixels (vireid serve --max-image-megapixels)")
            img.load()  # a truncated file fails here, not later
            return to_rgb(img), fmt
    except UnidentifiedImageError:
        raise ValueError("the upload is not an image (its format cannot be identified); send JPEG, PNG or BMP") \
            from None
    except Image.DecompressionBombError:
        raise UploadTooLarge("the image is larger than Pillow's decompression-bomb limit") from None
    except (OSError, SyntaxError):
        raise ValueError("the upload is not a complete image (truncated or damaged image data)") from None


class UploadGuard:
    """ASGI middleware bounding POST bodies before the app reads them: 401 for a protected path without a valid
    X-API-Key (the body is never read), 413 from Content-Length, or as soon as a streamed body passes the limit."""

    def __init__(self, app: Any, *, max_body: int, key: str | None, protected: tuple[str, ...] = ("/items",)) -> None:
        self.app, self.max_body, self.key, self.protected = app, int(max_body), key, protected

    @staticmethod
    async def _reply(send: Any, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        body = json.dumps({"detail": detail}).encode()
        hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        hdrs += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        await send({"type": "http.response.start", "status": status, "headers": hdrs})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if scope["path"] in self.protected and not key_matches(self.key, headers.get("x-api-key")):
            await self._reply(send, 401, "a valid X-API-Key header is required to add items",
                              {"WWW-Authenticate": "ApiKey"})
            return
        try:
            declared = int(headers.get("content-length", "0"))
        except ValueError:
            await self._reply(send, 400, "Content-Length is not a number")
            return
        if declared > self.max_body:
            await self._reply(send, 413, f"the request body ({declared} bytes) is larger than the limit of "
                                         f"{self.max_body} bytes (vireid serve --max-upload-mb)")
            return
        state = {"received": 0, "too_big": False, "started": False}

        async def guarded_receive() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.max_body:
                    state["too_big"] = True
                    return {"type": "http.disconnect"}  # the app stops reading; the 413 below answers
            return message

        async def guarded_send(message: Any) -> None:
            if state["too_big"]:
                return
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except Exception:
            if not state["too_big"]:
                raise
        if state["too_big"] and not state["started"]:
            await self._reply(send, 413, f"the request body is larger than the limit of {self.max_body} bytes "
                                         "(vireid serve --max-upload-mb)")


def create_app(index_dir: str | Path, *, extractor: Any = None, run: str | Path | None = None,
               device: str = "cpu", api_key: str | None = None, api_key_file: str | Path | None = None,
               max_upload_bytes: int = int(DEFAULT_MAX_UPLOAD_MB * 1024 * 1024),
               max_pixels: float = DEFAULT_MAX_MEGAPIXELS * 1e6, backend: str = "torch", threads: int | None = None,
               onnx_cache: str | Path | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
               batch_wait_ms: float = DEFAULT_BATCH_WAIT_MS) -> Any:
    """A FastAPI app serving the index at `index_dir` with `extractor` (default: the run the index records, on
    `backend`); concurrent /search queries are embedded together, up to `batch_size` per forward pass."""
    fastapi = _require_fastapi()
    from fastapi import File, Form, Header, HTTPException, Response, UploadFile
    from fastapi.responses import FileResponse, HTMLResponse
    from starlette.concurrency import run_in_threadpool

    from .gallery import extractor_for_index
    from .index import MAX_TAG_BYTES, META, GalleryIndex, IndexItem, check_item, index_lock

    if max_upload_bytes < 1 or max_pixels < 1:
        raise VireidError(f"upload limits must be positive, got {max_upload_bytes} bytes and {max_pixels} pixels")
    index_dir = Path(index_dir).expanduser().resolve()
    if extractor is None:
        extractor = extractor_for_index(index_dir, run, device=device, backend=backend, threads=threads,
                                        onnx_cache=onnx_cache)
    batcher = EmbedBatcher(extractor, batch_size=batch_size, wait_ms=batch_wait_ms)
    key = read_api_key(api_key, api_key_file)
    lock = threading.Lock()  # guards the served index object: reads, reloads, and the in-memory step of an add
    write_lock = threading.Lock()  # one writer of this process at a time (the file lock covers other processes)

    def meta_stamp() -> tuple[int, int, int]:
        try:
            st = (index_dir / META).stat()
        except OSError:
            return (0, 0, 0)
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    state: dict[str, Any] = {"index": GalleryIndex.open(index_dir, extractor=extractor), "stamp": meta_stamp()}

    def current() -> GalleryIndex:
        """The served index, read again when another writer committed to the directory (call with `lock` held)."""
        stamp = meta_stamp()
        if stamp != state["stamp"]:
            if state["index"].changed_on_disk():
                state["index"] = GalleryIndex.open(index_dir, extractor=extractor)
            state["stamp"] = stamp
        return state["index"]

    app = fastapi.FastAPI(title="vireid gallery search",
                          description="Cross-modality (visible-infrared) person search over a vireid gallery index.")
    app.add_middleware(UploadGuard, max_body=max_upload_bytes + _FORM_OVERHEAD, key=key)
    page = Path(__file__).with_name("static") / "index.html"

    async def read_image(upload: UploadFile) -> Any:
        data = await upload.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise HTTPException(413, f"upload larger than {max_upload_bytes} bytes")
        try:
            return (*await run_in_threadpool(decode_upload, data, max_pixels), data)
        except UploadTooLarge as exc:
            raise HTTPException(413, str(exc)) from None
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None

    def parse_modality(value: str) -> Modality:
        try:
            return Modality.parse(value)
        except ModalityError as exc:
            raise HTTPException(422, str(exc)) from None

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def home() -> Any:
        return HTMLResponse(page.read_text(encoding="utf-8"))

    @app.get("/health")
    def health() -> dict[str, Any]:
        """Liveness and what is being served."""
        with lock:
            index = current()
        return {"status": "ok", "items": len(index), "kind": index.kind, "feature": index.feature, "dim": index.dim,
                "fingerprint": index.fingerprint, "method": extractor.method_name,
                "backend": getattr(extractor, "backend", "torch"), "batch_size": batcher.batch_size}

    @app.post("/search")
    async def search(image: Annotated[UploadFile, File()], modality: str = Form(...),
                     topk: int = Form(10, ge=1, le=1000), cross_modal_only: bool = Form(False)) -> dict[str, Any]:
        """Rank the gallery for one query image: {"results": [{id, path, score, modality, camera, pid}]}."""
        mod = parse_modality(modality)
        with batcher.arriving():  # a batch being formed may wait (batch_wait_ms) for this one's decoding
            img, _, _ = await read_image(image)
        # embedded by the batcher's worker thread, with the queries that arrive meanwhile; never on the event loop
        feats = await batcher.embed(img, mod)

        def ranked() -> list[Any]:
            with lock:
                (hits,) = current().search(feats, topk, cross_modal_only=cross_modal_only, query_modality=mod)
            return hits

        # a small gallery is ranked in microseconds: a worker-thread round trip (behind the forward passes of
        # other requests) would cost more than the search; a large one is ranked off the event loop
        hits = ranked() if len(state["index"]) < INLINE_SEARCH_ROWS else await run_in_threadpool(ranked)
        return {"results": [h.to_dict() for h in hits]}

    @app.get("/items/{item_id}/image")
    def item_image(item_id: int) -> Any:
        """The gallery image of an item."""
        try:
            with lock:
                index = current()
                item = index.item(item_id)
            path = index.image_path(item)
        except KeyError:
            raise HTTPException(404, f"no item {item_id}") from None
        except GalleryIndexError:
            raise HTTPException(403, f"item {item_id} points outside the allowed image folders") from None
        if not path.is_file():
            raise HTTPException(404, f"the image of item {item_id} is missing on disk")
        return FileResponse(path, headers={"X-Content-Type-Options": "nosniff"})

    def commit(feats: Any, item: IndexItem, data: bytes) -> tuple[dict[str, Any], bool]:
        """Store the image and append the item under the writer locks; (item, created). Memory and disk change
        only when the append commits; readers wait only for the in-memory step, never for the disk."""
        with write_lock, index_lock(index_dir, timeout=30.0):
            with lock:
                index = current()
                stored = [old for old in index.items if old.path == item.path and old.modality is item.modality]
            if stored:  # a retry of an add that succeeded: the same bytes in the same modality
                return stored[0].to_dict(), False
            dest = index_dir / item.path
            dest.parent.mkdir(exist_ok=True)
            if not dest.exists():
                tmp = dest.with_name(f".{dest.name}.tmp")
                tmp.write_bytes(data)
                os.replace(tmp, dest)
            (new_id,) = index.append(feats, [item], memory_lock=lock)
            with lock:
                state["stamp"] = meta_stamp()
            return index.item(new_id).to_dict(), True

    @app.post("/items", status_code=201)
    async def add_item(response: Response, image: Annotated[UploadFile, File()], modality: str = Form(...),
                       camera: int | None = Form(None), pid: int | None = Form(None),
                       timestamp: str | None = Form(None), tags: str = Form("{}"),
                       x_api_key: str | None = Header(None)) -> dict[str, Any]:
        """Add one image to the gallery (header X-API-Key required); returns the new item (201), or the item
        already stored for the same image and modality (200)."""
        if not key_matches(key, x_api_key):
            raise HTTPException(401, "a valid X-API-Key header is required to add items",
                                {"WWW-Authenticate": "ApiKey"})
        mod = parse_modality(modality)
        if len(tags.encode()) > MAX_TAG_BYTES:
            raise HTTPException(422, f"tags take {len(tags.encode())} bytes; at most {MAX_TAG_BYTES} are allowed")
        try:
            tag_dict = json.loads(tags)
            if not isinstance(tag_dict, dict):
                raise ValueError("not an object")
        except (ValueError, RecursionError):
            raise HTTPException(422, "tags must be a JSON object, e.g. {\"site\": \"gate 2\"}") from None
        fields = IndexItem(path="images/pending", modality=mod, camera=camera, pid=pid, timestamp=timestamp,
                           tags=tag_dict)
        try:
            check_item(fields)  # before any work: a value SQLite cannot store is refused here, not after
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        img, fmt, data = await read_image(image)
        feats = await batcher.embed(img, mod)  # the same worker as searches: one forward pass at a time
        # the stored name is the content hash plus the decoded format: the client's file name is never used
        item = IndexItem(path=str(Path("images") / (hashlib.sha256(data).hexdigest() + _FORMAT_EXT[fmt])),
                         modality=mod, camera=camera, pid=pid, timestamp=timestamp, tags=tag_dict)
        try:
            record, created = await run_in_threadpool(commit, feats, item, data)
        except StorageError as exc:
            raise HTTPException(507, str(exc)) from None
        except GalleryIndexError as exc:
            raise HTTPException(503, str(exc), {"Retry-After": "5"}) from None
        if not created:
            response.status_code = 200
        return record

    app.state.batcher = batcher  # its worker is a daemon thread: it ends with the process (batcher.close() stops it)
    return app


def run_server(index_dir: str | Path, *, host: str = "127.0.0.1", port: int = 8000, run: str | None = None,
               device: str = "cpu", max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
               max_image_megapixels: float = DEFAULT_MAX_MEGAPIXELS, api_key_file: str | None = None,
               backend: str = "torch", threads: int | None = None, onnx_cache: str | None = None,
               batch_size: int = DEFAULT_BATCH_SIZE, batch_wait_ms: float = DEFAULT_BATCH_WAIT_MS) -> None:
    """Serve the index with uvicorn until interrupted; `threads` (default: the cores available) sets the
    intra-op threads of the forward pass, PyTorch's and ONNX Runtime's."""
    try:
        import uvicorn
    except ImportError as exc:
        raise VireidError("the service needs uvicorn, which is not installed; run `pip install vireid[serve]`") from exc
    if not 0 <= int(port) <= 65535:
        raise VireidError(f"--port must be 0..65535, got {port}")
    from ..inference.onnx_backend import default_threads

    threads = int(threads or default_threads())
    import torch

    # set on purpose, not left to the library: one forward pass runs at a time (the batcher), and it should
    # use the cores this process may run on, not every core of a machine shared with other processes
    torch.set_num_threads(threads)
    app = create_app(index_dir, run=run, device=device, api_key_file=api_key_file,
                     max_upload_bytes=int(max_upload_mb * 1024 * 1024), max_pixels=max_image_megapixels * 1e6,
                     backend=backend, threads=threads, onnx_cache=onnx_cache, batch_size=batch_size,
                     batch_wait_ms=batch_wait_ms)
    uvicorn.run(app, host=host, port=port)
