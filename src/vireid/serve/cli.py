"""`vireid index build|add`, `vireid search`, `vireid export` and `vireid serve` (thin layers; no torch at import)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _modality(value: str) -> str:
    """argparse type: a modality name or alias (rgb, ir, thermal, ...) -> 'visible' or 'infrared'."""
    from ..core import Modality, ModalityError

    try:
        return Modality.parse(value).value
    except ModalityError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _extractor(run: str | None, index_dir: str | Path | None, args: argparse.Namespace):
    """The FeatureExtractor of --run (building an index), or the one serving the index at `index_dir`."""
    from ..inference import FeatureExtractor
    from .gallery import extractor_for_index

    backend: dict[str, Any] = {"backend": getattr(args, "backend", "torch"), "threads": getattr(args, "threads", None),
               "onnx_cache": getattr(args, "onnx_cache", None)}
    if index_dir is None:
        assert run is not None  # without an index (index build), --run is a required option
        return FeatureExtractor(run, device=args.device, feature=args.feature, batch_size=args.batch_size,
                                checkpoint=args.checkpoint, **backend)
    return extractor_for_index(index_dir, run, feature=args.feature, device=args.device, batch_size=args.batch_size,
                               checkpoint=getattr(args, "checkpoint", "auto"), **backend)


def _progress(total: int, enabled: bool):
    if not enabled:
        return None, None
    from tqdm import tqdm

    bar = tqdm(total=total, desc="embedding gallery", leave=False, dynamic_ncols=True, file=sys.stderr)
    return bar, bar.update


def _index_params(args: argparse.Namespace) -> dict[str, int]:
    """The approximate-index options given on the command line (None = not given)."""
    from .index import DEFAULT_PARAMS

    return {n: getattr(args, n) for n in DEFAULT_PARAMS if getattr(args, n, None) is not None}


def cmd_index_build(args: argparse.Namespace) -> int:
    from ..core import ConfigError
    from .gallery import build_index, scan_images

    params = _index_params(args)
    if params and args.kind == "flat":
        raise ConfigError(f"--{next(iter(params)).replace('_', '-')} applies to approximate indexes; "
                          "add --kind ivf or --kind hnsw (flat search is exact and has no parameters)")
    extractor = _extractor(args.run, None, args)
    bar, update = _progress(len(scan_images(args.images, args.modality)), args.progress)
    index = build_index(extractor, args.images, args.out, modality=args.modality, kind=args.kind,
                        params=params, overwrite=args.overwrite, progress=update)
    if bar is not None:
        bar.close()
    info = index.describe()
    print(f"indexed {len(index)} images ({info['visible']} visible, {info['infrared']} infrared) into {args.out} "
          f"[{index.kind}, {index.feature} features, dim {index.dim}, model {index.fingerprint[:12]}]")
    return 0


def cmd_index_add(args: argparse.Namespace) -> int:
    from .gallery import add_to_index

    extractor = _extractor(args.run, args.index, args)
    index, added = add_to_index(extractor, args.index, args.images, modality=args.modality)
    print(f"added {added} images to {args.index}; it now holds {len(index)}")
    return 0


def cmd_index_info(args: argparse.Namespace) -> int:
    from .index import GalleryIndex

    info = GalleryIndex.open(args.index).describe()  # checks integrity; no model is loaded
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"{args.index}: {info['count']} images ({info['visible']} visible, {info['infrared']} infrared), "
          f"{info['kind']} index, {info['bytes'] / 2 ** 20:.1f} MiB")
    print(f"  model    {info['method']} {info['feature']} features, dim {info['dim']}, "
          f"fingerprint {info['fingerprint'][:12]}")
    print(f"  weights  {info['checkpoint']}")
    if info["params"]:
        print("  params   " + ", ".join(f"{k} {v}" for k, v in info["params"].items()))
    print("  roots    " + (", ".join(info["roots"]) or "-"))
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from ..core import ConfigError
    from .index import GalleryIndex
    from .search import render_results, search_images

    if args.topk < 1:
        raise ConfigError(f"--topk must be at least 1, got {args.topk}")
    extractor = _extractor(args.run, args.index, args)
    index = GalleryIndex.open(args.index, extractor=extractor)
    overrides = _index_params(args)
    if overrides and index.kind == "flat":
        print(f"vireid search: {args.index} is a flat (exact) index; --nprobe/--ef-search do not apply",
              file=sys.stderr)
    index.params.update(overrides)  # query-time settings: this search only, the index is not rewritten
    results = search_images(index, extractor, args.queries, args.modality, topk=args.topk,
                            cross_modal_only=args.cross_modal_only)
    failed = 0
    for r in results:
        if r.error is not None:
            failed += 1
            print(f"vireid search: query {r.query} failed: {r.error}", file=sys.stderr)
            continue
        if args.json:
            print(json.dumps(r.to_dict()))
        else:
            print(f"query {r.query} ({r.modality.value}): {len(r.hits)} matches")
            for rank, h in enumerate(r.hits, start=1):
                cam = "-" if h.item.camera is None else h.item.camera
                pid = "-" if h.item.pid is None else h.item.pid
                print(f"  {rank:3d}  {h.score:+.4f}  {h.item.modality.value:8s}  cam {cam}  pid {pid}  {h.item.path}")
    if args.render:
        out = render_results(index, [r for r in results if r.error is None], args.render)
        print(f"rendered {out}", file=sys.stderr)
    return 1 if failed else 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_onnx

    report = export_onnx(args.run, args.out, feature=args.feature, checkpoint=args.checkpoint,
                         opset=args.opset, input_kind=args.input, tolerance=args.tolerance)
    print(f"exported {report['out']} (inputs: {', '.join(report['inputs'])}; output {report['output']} "
          f"(N, {report['dim']})); ONNX Runtime vs PyTorch max abs difference {report['max_abs_diff']:.2e} "
          f"<= {report['tolerance']:.0e}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .app import run_server

    run_server(args.index, host=args.host, port=args.port, run=args.run, device=args.device,
               max_upload_mb=args.max_upload_mb, max_image_megapixels=args.max_image_megapixels,
               api_key_file=args.api_key_file, backend=args.backend, threads=args.threads,
               onnx_cache=args.onnx_cache, batch_size=args.batch_size, batch_wait_ms=args.batch_wait_ms)
    return 0


def _positive(value: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value!r}")
    return n


def _port(value: str) -> int:
    """argparse type: a TCP port 0..65535 (0: any free port)."""
    try:
        n = int(value)
    except ValueError:
        n = -1
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0..65535, got {value!r}")
    return n


def _positive_float(value: str) -> float:
    """argparse type: a number > 0."""
    try:
        x = float(value)
    except ValueError:
        x = 0.0
    if not x > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {value!r}")
    return x


def _positive_or_zero(value: str) -> int:
    """argparse type: an integer >= 0."""
    return 0 if value.strip() == "0" else _positive(value)


def _nonneg_float(value: str) -> float:
    """argparse type: a number >= 0."""
    try:
        x = float(value)
    except ValueError:
        x = -1.0
    if not x >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value!r}")
    return x


def _backend_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=("torch", "onnx"), default="torch",
                   help="torch: PyTorch eager (default); onnx: ONNX Runtime on the graph `vireid export` writes, "
                        "exported and cached in <run>/onnx on first use (needs vireid[export])")
    p.add_argument("--threads", type=_positive, default=None,
                   help="intra-op threads of the forward pass (default: the cores available, capped by "
                        "$OMP_NUM_THREADS); lower it when other processes share the machine")
    p.add_argument("--onnx-cache", default=None, metavar="DIR",
                   help="folder of the cached ONNX graphs (default: <run>/onnx); for read-only run folders")


def _search_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nprobe", type=_positive, help="ivf: lists searched per query (build default 16; search "
                                                       "default: the index's setting); more = slower, higher recall")
    p.add_argument("--ef-search", type=_positive, help="hnsw: search beam width (build default 128; search "
                                                          "default: the index's setting); more = slower, higher recall")


def _model_options(p: argparse.ArgumentParser, run_required: bool) -> None:
    if run_required:
        p.add_argument("run", metavar="RUN_DIR", help="trained run directory or checkpoint file")
    else:
        p.add_argument("--run", default=None,
                       help="trained run directory or checkpoint (default: the one recorded in the index)")
    p.add_argument("--checkpoint", default="auto", help="best, last, auto (default) or a file")
    p.add_argument("--feature", default=None, help="feature kind to index (default: the method's reported one, bn)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1, ...")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default: 64)")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `index`, `search`, `export` and `serve` to the `vireid` command."""
    p_index = subparsers.add_parser("index", help="build or grow a gallery index")
    isub = p_index.add_subparsers(dest="index_command", metavar="ACTION", required=True)

    p = isub.add_parser("build", help="embed a folder of images into a new index")
    _model_options(p, run_required=True)
    p.add_argument("--images", required=True,
                   help="<root>/<visible|infrared>/<camN>/<pid>/*.jpg, or flat with --modality")
    p.add_argument("--out", required=True, help="index directory to create")
    p.add_argument("--modality", type=_modality, metavar="{visible,infrared}",
                   help="every image under --images is of this modality (flat folder)")
    p.add_argument("--kind", choices=("flat", "ivf", "hnsw"), default="flat",
                   help="flat: exact search (default); ivf/hnsw: approximate, needs vireid[faiss]")
    _search_options(p)
    p.add_argument("--nlist", type=_positive_or_zero, help="ivf: number of lists (default 0 = 4 * sqrt(N))")
    p.add_argument("--train-per-list", type=_positive, help="ivf: k-means sample rows per list (default 64)")
    p.add_argument("--hnsw-m", type=_positive, help="hnsw: graph degree M (default 32)")
    p.add_argument("--ef-construction", type=_positive, help="hnsw: build-time beam width (default 80)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing index at --out")
    _backend_options(p)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=cmd_index_build)

    p = isub.add_parser("add", help="embed more images into an existing index (already indexed paths are skipped)")
    p.add_argument("index", metavar="INDEX_DIR")
    _model_options(p, run_required=False)
    p.add_argument("--images", required=True, help="folder of images (layout as for build)")
    p.add_argument("--modality", type=_modality, metavar="{visible,infrared}",
                   help="every image under --images is of this modality")
    _backend_options(p)
    p.set_defaults(func=cmd_index_add)

    p = isub.add_parser("info", help="describe an index (counts, model, parameters) after checking it")
    p.add_argument("index", metavar="INDEX_DIR")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=cmd_index_info)

    p = subparsers.add_parser("search", help="rank gallery images for query images")
    p.add_argument("index", metavar="INDEX_DIR")
    p.add_argument("queries", metavar="QUERY", nargs="+", help="query image files")
    _model_options(p, run_required=False)
    p.add_argument("--modality", required=True, type=_modality, metavar="{visible,infrared}",
                   help="modality of the query images")
    p.add_argument("--topk", type=int, default=10)
    p.add_argument("--cross-modal-only", action="store_true", help="only return images of the other modality")
    p.add_argument("--render", metavar="OUT_PNG", help="also draw the ranked lists to this PNG")
    p.add_argument("--json", action="store_true", help='one {"query", "modality", "results": [...]} object per line')
    _search_options(p)
    _backend_options(p)
    p.set_defaults(func=cmd_search)

    p = subparsers.add_parser("export", help="export a trained model to ONNX (with a parity check)")
    _model_options(p, run_required=True)
    p.add_argument("--format", choices=("onnx",), default="onnx")
    p.add_argument("--out", required=True, help="output .onnx file")
    p.add_argument("--input", choices=("float", "uint8"), default="float",
                   help="image input: float RGB in [0, 1] (default) or uint8 RGB 0..255, (N, 3, H, W)")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--tolerance", type=float, default=1e-4, help="max abs difference allowed (default 1e-4)")
    p.set_defaults(func=cmd_export)

    p = subparsers.add_parser("serve", help="REST API and web page over an index (needs vireid[serve])")
    p.add_argument("index", metavar="INDEX_DIR")
    p.add_argument("--run", default=None, help="run or checkpoint (default: the one recorded in the index)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_port, default=8000)
    p.add_argument("--max-upload-mb", type=_positive_float, default=10.0,
                   help="largest accepted request body, in MiB (default 10); larger ones get 413 before being read")
    p.add_argument("--max-image-megapixels", type=_positive_float, default=25.0,
                   help="largest accepted image, in megapixels as its header declares (default 25); checked "
                        "before decoding")
    p.add_argument("--api-key-file", default=None, help="file holding the key for POST /items (else $VIREID_API_KEY)")
    _backend_options(p)
    p.add_argument("--batch-size", type=_positive, default=16,
                   help="most concurrent /search queries embedded in one forward pass (default 16; 1: no batching)")
    p.add_argument("--batch-wait-ms", type=_nonneg_float, default=2.0,
                   help="how long a batch waits for queries still being decoded (default 2 ms); a lone query "
                        "never waits")
    p.set_defaults(func=cmd_serve)
