"""End to end: index the visible test images of a trained run's dataset, search with infrared test
images through the CLI and the REST API; both top-k lists equal the evaluator's ranking."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from tests.test_serve_helpers import trained_run
from vireid.cli import main as cli_main
from vireid.core import Modality, Sample

pytest.importorskip("fastapi")
pytestmark = pytest.mark.slow
TOPK = 5


def test_cli_api_and_evaluator_rank_alike(tmp_path_factory, capsys):
    from fastapi.testclient import TestClient

    from vireid.data.datasets import load_dataset
    from vireid.inference import load_trained, make_extractor
    from vireid.metrics import evaluate_ranking
    from vireid.serve.app import create_app

    run, data = trained_run(tmp_path_factory)
    base = tmp_path_factory.mktemp("e2e")
    test = load_dataset("sysu", data).test
    gallery = []  # visible test images copied into the `folder` layout the index reads
    for s in (s for s in test if s.modality is Modality.VISIBLE):
        dst = base / "images" / "visible" / f"cam{s.camid}" / f"{s.pid:04d}" / f"{s.camid}_{s.path.rsplit('/', 1)[-1]}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(s.path, dst)
        gallery.append(Sample(str(dst.resolve()), s.pid, s.camid, Modality.VISIBLE))
    queries = [s for s in test if s.modality is Modality.INFRARED][::7][:3]
    index = base / "index"
    assert cli_main(["index", "build", str(run), "--images", str(base / "images"), "--out", str(index),
                     "--no-progress"]) == 0

    # the evaluator's ranking: the engine's extraction, distance = -cosine, stable order
    cfg, method, _ = load_trained(run)
    feats = make_extractor(method, cfg.data.height, cfg.data.width, torch.device("cpu"), kinds=("bn",))(
        queries + gallery)["bn"]
    q, g = feats[: len(queries)], feats[len(queries):]
    dist = -(q @ g.T)
    m = evaluate_ranking(dist, np.array([s.pid for s in queries]), np.array([s.pid for s in gallery]),
                         np.array([s.camid for s in queries]), np.array([s.camid for s in gallery]),
                         rule="none", cmc="image")
    assert m.num_valid_queries == len(queries)
    order = torch.argsort(dist, dim=1, stable=True)[:, :TOPK]

    client = TestClient(create_app(index))
    for qi, query in enumerate(queries):
        expected = [gallery[j].path for j in order[qi].tolist()]
        capsys.readouterr()
        assert cli_main(["search", str(index), query.path, "--modality", "infrared", "--topk", str(TOPK),
                         "--json"]) == 0
        cli = [r["path"] for r in json.loads(capsys.readouterr().out.strip())["results"]]
        with open(query.path, "rb") as f:
            api = client.post("/search", files={"image": ("q.jpg", f.read(), "image/jpeg")},
                              data={"modality": "infrared", "topk": str(TOPK)}).json()["results"]
        assert cli == expected, (query.path, cli, expected)
        assert [r["path"] for r in api] == expected
