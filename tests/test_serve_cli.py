"""`vireid index build|add` and `vireid search` end to end on a tiny trained run."""

from __future__ import annotations

import json
import os

import pytest
from PIL import Image

from tests.test_serve_helpers import make_gallery_folder, trained_run
from vireid.cli import main as cli_main
from vireid.serve.index import GalleryIndex


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    run, _ = trained_run(tmp_path_factory)
    base = tmp_path_factory.mktemp("gallery")
    gallery = make_gallery_folder(base / "images")
    out = base / "index"
    assert cli_main(["index", "build", str(run), "--images", str(gallery), "--out", str(out), "--no-progress"]) == 0
    return run, gallery, out


def test_build_indexes_the_folder_layout(built, capsys):
    run, gallery, out = built
    index = GalleryIndex.open(out)
    assert len(index) == 12  # 3 ids x (visible cam1 + infrared cam3) x 2 images
    assert {(it.modality.value, it.camera) for it in index.items} == {("visible", 1), ("infrared", 3)}
    assert sorted({it.pid for it in index.items}) == [1, 2, 3]
    assert index.model["checkpoint"].endswith("last.pt") and index.roots == [str(gallery.resolve())]


def test_search_json_ranks_itself_first_and_names_failed_queries(built, tmp_path, capsys):
    run, gallery, out = built
    query = sorted((gallery / "infrared").rglob("*.jpg"))[0]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(open(query, "rb").read()[:60])  # a truncated JPEG
    capsys.readouterr()
    rc = cli_main(["search", str(out), str(bad), str(query), "--modality", "infrared", "--topk", "3", "--json"])
    cap = capsys.readouterr()
    assert rc == 1
    assert f"query {bad} failed" in cap.err and "broken.jpg" in cap.err
    (line,) = cap.out.strip().splitlines()
    res = json.loads(line)
    assert res["query"] == str(query) and res["modality"] == "infrared"
    assert [set(r) for r in res["results"]] == [{"id", "path", "score", "modality", "camera", "pid"}] * 3
    assert res["results"][0]["path"] == str(query.resolve())
    assert res["results"][0]["score"] == pytest.approx(1, abs=1e-5)
    scores = [r["score"] for r in res["results"]]
    assert scores == sorted(scores, reverse=True)


def test_search_cross_modal_text_and_render(built, tmp_path, capsys):
    run, gallery, out = built
    query = sorted((gallery / "infrared").rglob("*.jpg"))[0]
    png = tmp_path / "ranks.png"
    capsys.readouterr()
    rc = cli_main(["search", str(out), str(query), "--run", str(run), "--modality", "ir", "--topk", "4",
                   "--cross-modal-only", "--render", str(png)])
    assert rc == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"query {query} (infrared): 4 matches"
    assert all(" visible " in ln for ln in lines[1:5])
    with Image.open(png) as im:
        assert im.size[0] > 4 * 64 and im.format == "PNG"


def test_search_refuses_an_index_of_another_model(built, tmp_path, capsys):
    run, gallery, out = built
    other = tmp_path / "other"
    assert cli_main(["index", "build", str(run), "--images", str(gallery / "visible"), "--modality", "visible",
                     "--out", str(other), "--feature", "pool", "--no-progress"]) == 0
    assert len(GalleryIndex.open(other)) == 6 and GalleryIndex.open(other).items[0].pid is None
    query = sorted(gallery.rglob("*.jpg"))[0]
    capsys.readouterr()
    # --run without --feature pool: bn features of the same run are another model for this index
    assert cli_main(["search", str(other), str(query), "--run", str(run), "--modality", "visible"]) == 2
    assert "was built by another model" in capsys.readouterr().err


def test_index_add_and_refusals(built, tmp_path, capsys):
    run, gallery, out = built
    idx = tmp_path / "idx"
    assert cli_main(["index", "build", str(run), "--images", str(gallery / "visible"), "--modality", "visible",
                     "--out", str(idx), "--no-progress"]) == 0
    assert cli_main(["index", "add", str(idx), "--images", str(gallery / "infrared"), "--modality", "infrared"]) == 0
    assert "added 6 images" in capsys.readouterr().out
    assert cli_main(["index", "add", str(idx), "--images", str(gallery / "infrared"), "--modality", "infrared"]) == 0
    assert "added 0 images" in capsys.readouterr().out  # already indexed paths are skipped
    assert len(GalleryIndex.open(idx)) == 12
    # refusing to overwrite, and a symlink that leads outside --images
    assert cli_main(["index", "build", str(run), "--images", str(gallery), "--out", str(idx)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    flat = tmp_path / "flat"
    flat.mkdir()
    outside = sorted(gallery.rglob("*.jpg"))[0]
    os.symlink(outside, flat / "escape.jpg")
    assert cli_main(["index", "build", str(run), "--images", str(flat), "--modality", "visible",
                     "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "escape.jpg" in err and "outside the image folder" in err and not (tmp_path / "x").exists()
    # a flat folder without --modality is named, with the fix
    argv = ["index", "build", str(run), "--images", str(gallery / "visible"), "--out", str(tmp_path / "y")]
    assert cli_main(argv) == 2
    assert "--modality visible or --modality infrared" in capsys.readouterr().err


def test_approximate_index_options_are_stored_and_overridable(built, tmp_path, capsys):
    pytest.importorskip("faiss")
    run, gallery, out = built
    idx = tmp_path / "hnsw"
    assert cli_main(["index", "build", str(run), "--images", str(gallery), "--out", str(idx), "--kind", "hnsw",
                     "--hnsw-m", "8", "--ef-construction", "40", "--ef-search", "20", "--no-progress"]) == 0
    meta = json.loads((idx / "meta.json").read_text())
    assert meta["kind"] == "hnsw" and (meta["params"]["hnsw_m"], meta["params"]["ef_construction"],
                                       meta["params"]["ef_search"]) == (8, 40, 20)
    query = sorted((gallery / "infrared").rglob("*.jpg"))[0]
    capsys.readouterr()
    assert cli_main(["search", str(idx), str(query), "--modality", "infrared", "--topk", "12", "--json",
                     "--ef-search", "64"]) == 0
    flat_rc = cli_main(["search", str(out), str(query), "--modality", "infrared", "--topk", "12", "--json",
                        "--nprobe", "3"])
    cap = capsys.readouterr()
    hnsw_res, flat_res = (json.loads(line) for line in cap.out.strip().splitlines())
    assert flat_rc == 0 and "flat (exact) index; --nprobe/--ef-search do not apply" in cap.err
    # 12 items, efSearch 64: the graph search visits everything, so it equals exact search
    assert [r["id"] for r in hnsw_res["results"]] == [r["id"] for r in flat_res["results"]]
    assert json.loads((idx / "meta.json").read_text())["params"]["ef_search"] == 20  # search did not rewrite it
    assert cli_main(["index", "info", str(idx), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == {"hnsw_m": 8, "ef_search": 20, "ef_construction": 40}
    # parameters of approximate indexes are refused for flat ones, and bad values by argparse
    assert cli_main(["index", "build", str(run), "--images", str(gallery), "--out", str(tmp_path / "f"),
                     "--nlist", "16"]) == 2
    assert "--nlist applies to approximate indexes; add --kind ivf or --kind hnsw" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["search", str(idx), str(query), "--modality", "infrared", "--nprobe", "0"])
    assert "expected an integer >= 1, got '0'" in capsys.readouterr().err


def test_index_info_describes_and_checks_the_index(built, tmp_path, capsys):
    run, gallery, out = built
    capsys.readouterr()
    assert cli_main(["index", "info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    index = GalleryIndex.open(out)
    got = (info["count"], info["visible"], info["infrared"], info["kind"], info["dim"])
    assert got == (12, 6, 6, "flat", index.dim)
    assert info["fingerprint"] == index.fingerprint and info["checkpoint"].endswith("last.pt")
    assert info["params"] == {} and info["roots"] == [str(gallery.resolve())] and info["bytes"] > 0
    assert cli_main(["index", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"{out}: 12 images (6 visible, 6 infrared), flat index")
    assert f"fingerprint {index.fingerprint[:12]}" in text
    # a damaged index is refused by name, as on every open
    (tmp_path / "broken").mkdir()
    assert cli_main(["index", "info", str(tmp_path / "broken")]) == 2
    assert "meta.json is missing" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("method,overrides", [
    ("jsia", ("method.gan_warmup_epochs=0",)),
    ("d2rl", ("method.ti_pretrain_epochs=0",)),
])
def test_index_build_and_search_with_a_generative_method_run(method, overrides, tmp_path, capsys):
    from tests.engine_fixtures import make_tiny_sysu, tiny_train_config
    from vireid.engine.trainer import Trainer

    data = make_tiny_sysu(tmp_path / "sysu")
    run = tmp_path / "run"
    Trainer(tiny_train_config(data, "train.epochs=1", "data.height=32", "data.width=32", *overrides,
                              method=method), run).fit()
    gallery = make_gallery_folder(tmp_path / "images")
    out = tmp_path / "index"
    assert cli_main(["index", "build", str(run), "--images", str(gallery), "--out", str(out), "--no-progress"]) == 0
    query = sorted((gallery / "infrared").rglob("*.jpg"))[0]
    capsys.readouterr()
    assert cli_main(["search", str(out), str(query), "--modality", "infrared", "--topk", "3", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip())
    assert res["results"][0]["path"] == str(query.resolve())
    assert res["results"][0]["score"] == pytest.approx(1, abs=1e-5)
    assert len(res["results"]) == 3
