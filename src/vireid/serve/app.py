"""The REST API and web page over a GalleryIndex (FastAPI; optional extra `vireid[serve]`).

Endpoints: POST /search (multipart image + modality + topk) -> {"results": [...]} best first;
GET /items/{id}/image; POST /items (adds an image; needs the API key); GET /health; GET / (web page);
OpenAPI docs at /docs. Uploads are size-limited (413), decoded rather than trusted by name (400),
checked for modality (422) and stored only inside <index>/images/ under their content hash.
"""


import hashlib
import hmac
import io
import json
import os
import threading
from pathlib import Path
from typing import Annotated, Any

from ..core import GalleryIndexError, Modality, ModalityError, VireidError

API_KEY_ENV = "VIREID_API_KEY"
_FORMAT_EXT = {"JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp"}


def _require_fastapi() -> Any:
    try:
        import fastapi
    except ImportError as exc:
        raise VireidError("the service needs FastAPI and uvicorn, which are not installed; "
                          "run `pip install vireid[serve]`") from exc
    return fastapi


def read_api_key(api_key: str | None = None, api_key_file: "str | Path | None" = None) -> str | None:
    """The key for POST /items: given, else the first line of `api_key_file`, else $VIREID_API_KEY."""
    if api_key:
        return api_key
    if api_key_file is not None:
        try:
            key = Path(api_key_file).read_text().strip()
        except OSError as exc:
            raise VireidError(f"cannot read the API key file {api_key_file}: {exc.strerror or exc}") from None
        if not key:
            raise VireidError(f"the API key file {api_key_file} is empty")
        return key
    return os.environ.get(API_KEY_ENV) or None


def decode_upload(data: bytes) -> "tuple[Any, str]":
    """(RGB PIL image, Pillow format) of uploaded bytes; ValueError when they are not a complete image."""
    from PIL import Image, UnidentifiedImageError

    from ..data.images import to_rgb

    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format or ""
            img.load()  # a truncated file fails here, not later
            if fmt not in _FORMAT_EXT:
                raise ValueError(f"unsupported image format {fmt or 'unknown'}; send JPEG, PNG or BMP")
            return to_rgb(img), fmt
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"the upload is not a complete image ({exc})") from None


def create_app(index_dir: "str | Path", *, extractor: Any = None, run: "str | Path | None" = None,
               device: str = "cpu", api_key: str | None = None, api_key_file: "str | Path | None" = None,
               max_upload_bytes: int = 10 * 1024 * 1024) -> Any:
    """A FastAPI app serving the index at `index_dir` with `extractor` (default: the run the index records)."""
    fastapi = _require_fastapi()
    from fastapi import File, Form, Header, HTTPException, UploadFile
    from fastapi.responses import FileResponse, HTMLResponse
    from starlette.concurrency import run_in_threadpool

    from .gallery import extractor_for_index
    from .index import GalleryIndex, IndexItem

    index_dir = Path(index_dir).expanduser().resolve()
    if extractor is None:
        extractor = extractor_for_index(index_dir, run, device=device)
    index = GalleryIndex.open(index_dir, extractor=extractor)
    key = read_api_key(api_key, api_key_file)
    lock = threading.Lock()
    app = fastapi.FastAPI(title="vireid gallery search",
                          description="Cross-modality (visible-infrared) person search over a vireid gallery index.")
    page = Path(__file__).with_name("static") / "index.html"

    async def read_image(upload: UploadFile) -> Any:
        data = await upload.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise HTTPException(413, f"upload larger than {max_upload_bytes} bytes")
        try:
            return (*decode_upload(data), data)
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
        return {"status": "ok", "items": len(index), "kind": index.kind, "feature": index.feature, "dim": index.dim,
                "fingerprint": index.fingerprint, "method": extractor.method_name}

    @app.post("/search")
    async def search(image: Annotated[UploadFile, File()], modality: str = Form(...),
                     topk: int = Form(10, ge=1, le=1000), cross_modal_only: bool = Form(False)) -> dict[str, Any]:
        """Rank the gallery for one query image: {"results": [{id, path, score, modality, camera, pid}]}."""
        mod = parse_modality(modality)
        img, _, _ = await read_image(image)
        feats = await run_in_threadpool(extractor, img, mod)  # the forward pass must not block the event loop
        with lock:
            (hits,) = index.search(feats, topk, cross_modal_only=cross_modal_only, query_modality=mod)
        return {"results": [h.to_dict() for h in hits]}

    @app.get("/items/{item_id}/image")
    def item_image(item_id: int) -> Any:
        """The gallery image of an item."""
        try:
            item = index.item(item_id)
            path = index.image_path(item)
        except KeyError:
            raise HTTPException(404, f"no item {item_id}") from None
        except GalleryIndexError:
            raise HTTPException(403, f"item {item_id} points outside the allowed image folders") from None
        if not path.is_file():
            raise HTTPException(404, f"the image of item {item_id} is missing on disk")
        return FileResponse(path)

    @app.post("/items", status_code=201)
    async def add_item(image: Annotated[UploadFile, File()], modality: str = Form(...), camera: int | None = Form(None),
                       pid: int | None = Form(None), timestamp: str | None = Form(None), tags: str = Form("{}"),
                       x_api_key: str | None = Header(None)) -> dict[str, Any]:
        """Add one image to the gallery (header X-API-Key required); returns the new item."""
        if key is None or x_api_key is None or not hmac.compare_digest(x_api_key.encode(), key.encode()):
            raise HTTPException(401, "a valid X-API-Key header is required to add items",
                                {"WWW-Authenticate": "ApiKey"})
        mod = parse_modality(modality)
        try:
            tag_dict = json.loads(tags)
            if not isinstance(tag_dict, dict):
                raise ValueError("not an object")
        except ValueError:
            raise HTTPException(422, "tags must be a JSON object, e.g. {\"site\": \"gate 2\"}") from None
        img, fmt, data = await read_image(image)
        feats = await run_in_threadpool(extractor, img, mod)
        # the stored name is the content hash plus the decoded format: the client's file name is never used
        rel = Path("images") / (hashlib.sha256(data).hexdigest() + _FORMAT_EXT[fmt])
        with lock:
            dest = index_dir / rel
            dest.parent.mkdir(exist_ok=True)
            if not dest.exists():
                tmp = dest.with_name(f".{dest.name}.tmp")
                tmp.write_bytes(data)
                os.replace(tmp, dest)
            (new_id,) = index.add(feats, [IndexItem(path=str(rel), modality=mod, camera=camera, pid=pid,
                                                    timestamp=timestamp, tags=tag_dict)])
            index.save(index_dir)
        return index.item(new_id).to_dict()

    return app


def run_server(index_dir: "str | Path", *, host: str = "127.0.0.1", port: int = 8000, run: "str | None" = None,
               device: str = "cpu", max_upload_mb: float = 10.0, api_key_file: "str | None" = None) -> None:
    """Serve the index with uvicorn until interrupted."""
    try:
        import uvicorn
    except ImportError as exc:
        raise VireidError("the service needs uvicorn, which is not installed; run `pip install vireid[serve]`") from exc
    app = create_app(index_dir, run=run, device=device, api_key_file=api_key_file,
                     max_upload_bytes=int(max_upload_mb * 1024 * 1024))
    uvicorn.run(app, host=host, port=port)
