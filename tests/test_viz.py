"""vireid.viz from plain arrays: the numbers behind the figures (query choice, rankings under the protocol rules,
per-camera rank-1, the modality gap and its AUC, identity samples), every figure as PNG/SVG/PDF with a known
size and visible content, the method pictures from tiny untrained MPANet and LbA networks, and light imports."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import tiny_config
from vireid.core import Modality, Sample, VireidError
from vireid.viz import analysis as A
from vireid.viz import figures as FG

pytest.importorskip("matplotlib")

VARIANCE_FLOOR = 200.0  # grey-level variance of a figure with content; a blank page has 0


def check_png(path, size=None):
    """The PNG decodes, has `size` (width, height) when given, and is not blank."""
    with Image.open(path) as img:
        img.load()
        assert img.format == "PNG"
        if size is not None:
            assert img.size == size, (path, img.size, size)
        grey = np.asarray(img.convert("L"), dtype=np.float64)
    assert grey.var() > VARIANCE_FLOOR, (path, grey.var())


def pixels(inches):
    return tuple(round(x * 100) for x in inches)


# ---------------------------------------------------------------------------------------------- analysis


def test_queries_are_chosen_by_ap_skipping_invalid_ones_ties_by_index():
    ap = np.array([0.5, np.nan, 0.9, 0.1, 0.5, 0.7, 0.3])
    chosen = A.select_queries(ap, per_group=2)
    assert chosen["best"] == [2, 5]
    assert chosen["worst"] == [3, 6]
    assert chosen["median"] == [0, 4]  # ranked 2,5,0,4,6,3: the middle two, the tie kept in index order
    assert A.select_queries(np.full(3, np.nan)) == {"best": [], "median": [], "worst": []}


def test_rank_query_follows_the_rules_and_a_stable_sort():
    g_pids = np.array([1, 2, 1, 3, 1])
    g_cams = np.array([2, 1, 1, 2, 3])
    dist = np.array([0.1, 0.2, 0.2, 0.05, 0.3])
    r = A.rank_query(dist, 1, 3, g_pids, g_cams, "sysu_location", topk=2)
    assert r.order == [1, 2] and r.correct == [False, True]  # camera 2 dropped for a camera-3 query; tie: index
    assert (r.first_match, r.first_match_index) == (2, 2)
    r = A.rank_query(dist, 1, 1, g_pids, g_cams, "sysu_location", topk=5)
    assert r.order == [3, 0, 1, 2, 4]
    r = A.rank_query(dist, 1, 3, g_pids, g_cams, "same_pid_same_cam", topk=5)
    assert 4 not in r.order and r.order == [3, 0, 1, 2]
    r = A.rank_query(dist, 9, 1, g_pids, g_cams, "none", topk=3)
    assert (r.first_match, r.first_match_index) == (-1, -1) and not any(r.correct)
    with pytest.raises(ValueError, match="rule must be one of"):
        A.rank_query(dist, 1, 1, g_pids, g_cams, "bogus", topk=3)


def test_first_match_beyond_k_gets_its_own_tile(tmp_path):
    from vireid.viz.ranklist import CORRECT, ranked_rows

    queries = [Sample("q.jpg", 7, 3, Modality.INFRARED)]
    gallery = [Sample(f"g{i}.jpg", 7 if i == 4 else i, 1, Modality.VISIBLE) for i in range(6)]
    r = A.rank_query(np.arange(6, dtype=float), 7, 3, np.array([s.pid for s in gallery]),
                     np.array([s.camid for s in gallery]), "none", topk=3)
    r.ap = 0.2
    (row,) = ranked_rows([r], queries, gallery)
    assert row.query.caption == ["id 7", "cam3 IR", "AP 20.0%"]
    assert [t.caption[0] for t in row.hits] == ["#1 id 0", "#2 id 1", "#3 id 2", "1st: #5"]
    assert row.hits[-1].colour == CORRECT and row.hits[-1].image == "g4.jpg"


def test_separation_auc_is_the_pairwise_probability():
    assert A.separation_auc(np.array([0.1, 0.2]), np.array([0.5, 0.9])) == 1.0
    assert A.separation_auc(np.array([0.5, 0.9]), np.array([0.1, 0.2])) == 0.0
    assert A.separation_auc(np.array([0.3]), np.array([0.3])) == 0.5
    rng = np.random.default_rng(0)
    same, diff = rng.random(40), rng.random(55) + 0.3
    brute = np.mean([(d > s) + 0.5 * (d == s) for s in same for d in diff])
    assert A.separation_auc(same, diff) == pytest.approx(brute)
    assert np.isnan(A.separation_auc(np.array([]), diff))


def test_modality_gap_groups_every_pair_once():
    rng = np.random.default_rng(1)
    f = rng.normal(size=(12, 5)).astype(np.float32)
    pids = np.repeat([1, 2, 3], 4)
    mods = ["visible", "infrared"] * 6
    gap = A.modality_gap(f, pids, mods)
    n = len(f)
    assert sum(v.size for v in (gap.within_same, gap.within_different, gap.cross_same, gap.cross_different)) \
        == n * (n - 1) // 2
    fn = f / np.linalg.norm(f, axis=1, keepdims=True)
    want = sorted(1 - fn[i] @ fn[j] for i in range(n) for j in range(i + 1, n)
                  if pids[i] == pids[j] and mods[i] != mods[j])
    np.testing.assert_allclose(np.sort(gap.cross_same), want, rtol=1e-5, atol=1e-6)
    assert gap.auc_cross == pytest.approx(A.separation_auc(gap.cross_same, gap.cross_different))
    summary = gap.summary()
    assert summary["cross_same"]["pairs"] == len(want) and 0 <= summary["auc_within"] <= 1
    # codes, names and Modality values mean the same
    same = A.modality_gap(f, pids, [Modality.parse(m).code for m in mods])
    np.testing.assert_array_equal(same.cross_same, gap.cross_same)


def test_camera_pair_rank1_equals_a_per_query_loop():
    rng = np.random.default_rng(2)
    q_pids, q_cams = np.array([1, 2, 3, 1, 2]), np.array([3, 3, 6, 6, 3])
    g_pids, g_cams = np.array([1, 2, 3, 1, 2, 3, 2]), np.array([1, 2, 1, 2, 4, 4, 1])
    dist = rng.random((5, 7))
    cams = A.camera_pair_rank1(dist, q_pids, g_pids, q_cams, g_cams, rule="sysu_location")
    assert cams.query_cameras == [3, 6] and cams.gallery_cameras == [1, 2, 4]
    for i, qc in enumerate(cams.query_cameras):
        for j, gc in enumerate(cams.gallery_cameras):
            hits = valid = 0
            for q in np.flatnonzero(q_cams == qc):
                cols = np.flatnonzero(g_cams == gc)
                if qc == 3 and gc == 2:
                    cols = cols[:0]  # the SYSU rule: a camera-3 query ignores camera 2
                if not (g_pids[cols] == q_pids[q]).any():
                    continue
                valid += 1
                hits += int(g_pids[cols[np.argmin(dist[q, cols])]] == q_pids[q])
            assert (cams.hits[i, j], cams.valid[i, j]) == (hits, valid)
    assert np.isnan(cams.rank1[0, 1])  # camera 3 x camera 2: nothing left to rank
    both = cams + cams
    np.testing.assert_array_equal(both.hits, 2 * cams.hits)
    np.testing.assert_allclose(both.rank1, cams.rank1)


def test_identity_samples_are_seeded_capped_and_in_both_modalities():
    pids = np.array([1] * 6 + [2] * 3 + [3] * 4)
    mods = [0, 0, 0, 1, 1, 1] + [0, 0, 0] + [0, 1, 0, 1]
    rows = A.sample_identities(pids, mods, num_ids=5, per_modality=2, seed=0)
    assert set(pids[rows]) == {1, 3}  # identity 2 has no infrared image
    assert len(rows) == 8 and list(rows) == sorted(rows)
    np.testing.assert_array_equal(rows, A.sample_identities(pids, mods, num_ids=5, per_modality=2, seed=0))


# ---------------------------------------------------------------------------------------------- figures


def test_each_figure_writes_png_svg_and_pdf_of_the_expected_size(tmp_path):
    rng = np.random.default_rng(0)
    records = [{"kind": "train", "epoch": 0, "step": s, "loss": 3 - 0.1 * s, "ce": 1.0 / s} for s in range(1, 9)]
    records += [{"kind": "epoch", "epoch": e, "step": 4 * (e + 1), "loss": 2.5 - e, "lr_main": 0.1 / (e + 1),
                 "images_per_s": 80.0 + e, "seconds": 3.0} for e in range(2)]
    records += [{"kind": "val", "epoch": e, "step": 4 * (e + 1), "rank1": 0.2 + 0.1 * e} for e in range(2)]
    panels = FG.curve_panels(records)
    assert [p.title for p in panels] == ["loss", "ce", "learning rate", "validation rank-1 (%)", "images / s"]
    check_png(FG.plot_training_curves(records, tmp_path / "curves.png"), pixels(FG.curves_size(len(panels))))
    check_png(FG.plot_cmc({"bn": np.linspace(0.3, 0.9, 12), "bn+rerank": np.linspace(0.4, 1.0, 20)},
                          tmp_path / "cmc.png"), pixels(FG.SIZES["cmc"]))
    pts, pids = rng.normal(size=(30, 2)), np.repeat(np.arange(5), 6)
    mods = [Modality.VISIBLE, Modality.INFRARED] * 15
    check_png(FG.save_figure(FG.draw_embedding(pts, pids, mods), tmp_path / "emb.png"), pixels(FG.SIZES["tsne"]))
    gap = A.modality_gap(rng.normal(size=(30, 8)), pids, mods)
    check_png(FG.plot_modality_gap(gap, tmp_path / "gap.png"), pixels(FG.SIZES["modality_gap"]))
    cams = A.camera_pair_rank1(rng.random((6, 10)), np.arange(6) % 3, np.arange(10) % 3, [3, 3, 3, 6, 6, 6],
                               [1, 2] * 5, rule="sysu_location")
    check_png(FG.plot_camera_rank1(cams, tmp_path / "cams.png"), pixels(FG.SIZES["camera_rank1"]))
    assert FG.plot_cmc({"bn": [0.5, 1.0]}, tmp_path / "cmc.svg").read_text().lstrip().startswith("<?xml")
    assert FG.plot_modality_gap(gap, tmp_path / "gap.pdf").read_bytes().startswith(b"%PDF")
    with pytest.raises(VireidError, match=r"must end in \.png, \.svg, \.pdf"):
        FG.plot_cmc({"bn": [0.5]}, tmp_path / "cmc.gif")
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave nothing behind


def test_plot_tsne_samples_identities_and_draws_them(tmp_path):
    pytest.importorskip("sklearn")
    rng = np.random.default_rng(0)
    pids = np.repeat(np.arange(8), 6)
    mods = np.tile([0, 1], 24)
    feats = rng.normal(size=(48, 16)) + pids[:, None]
    check_png(FG.plot_tsne(feats, pids, mods, tmp_path / "tsne.png", num_ids=5), pixels(FG.SIZES["tsne"]))
    points = A.tsne(feats[:20], seed=0)
    assert points.shape == (20, 2) and np.allclose(points, A.tsne(feats[:20], seed=0))


def test_a_missing_scikit_learn_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.manifold", None)
    with pytest.raises(VireidError,
                       match=r"needs scikit-learn, which is not installed; run `pip install 'vireid\[viz\]'`"):
        A.tsne(np.random.default_rng(0).normal(size=(10, 4)))


def test_ranklists_render_as_pdf_and_svg_too(tmp_path):
    from vireid.viz import QUERY, RankRow, Tile, render_ranklist

    img = Image.new("RGB", (16, 32), (200, 30, 30))
    rows = [RankRow(Tile(img, ["q"], QUERY), [Tile(img, ["#1"]), Tile(None, ["#2"])])]
    png = render_ranklist(rows, tmp_path / "r.png", tile=(32, 16))
    with Image.open(png) as im:
        size = im.size
    assert render_ranklist(rows, tmp_path / "r.pdf", tile=(32, 16)).read_bytes().startswith(b"%PDF")
    svg = render_ranklist(rows, tmp_path / "r.svg", tile=(32, 16)).read_text()
    assert f'width="{size[0] * 72 / 100:g}pt"' in svg  # the same picture, 100 pixels per inch


# ---------------------------------------------------------------------------------------------- method pictures


def _images(tmp_path, n=4):
    samples = []
    for i in range(n):
        mod = Modality.VISIBLE if i % 2 == 0 else Modality.INFRARED
        path = tmp_path / f"{i}.png"
        arr = np.random.default_rng(i).integers(0, 255, size=(64, 32, 3), dtype=np.uint8)
        Image.fromarray(arr).save(path)
        samples.append(Sample(str(path), 1 + i // 2, 1 if mod is Modality.VISIBLE else 3, mod))
    return samples


def test_mpanet_pattern_maps_are_drawn_over_the_input(tmp_path):
    from vireid.methods import build_method
    from vireid.viz import method_pictures, mpanet_pattern_maps, plot_pattern_maps

    cfg = tiny_config("mpanet")
    torch.manual_seed(0)
    method = build_method(cfg, 6)
    assert method_pictures(method) == ["patterns"]
    samples = _images(tmp_path)
    images, maps = mpanet_pattern_maps(method, samples, cfg.data.height, cfg.data.width)
    assert images.shape == (4, cfg.data.height, cfg.data.width, 3) and images.dtype == np.uint8
    assert maps.shape[:2] == (4, cfg.method.num_parts)
    # each image went through its own modality's branch: the same as calling the hook per modality
    from vireid.inference.embed import preprocess

    x = preprocess(samples[1:2], cfg.data.height, cfg.data.width, method.inference_spec())
    np.testing.assert_allclose(maps[1], method.pattern_maps(x, Modality.INFRARED)[0].numpy(), rtol=1e-4, atol=1e-5)
    check_png(plot_pattern_maps(images, maps, tmp_path / "maps.png"))
    assert method_pictures(build_method(tiny_config("baseline"), 6)) == []


def test_lba_correspondences_are_drawn_between_the_modalities(tmp_path):
    from vireid.methods import build_method
    from vireid.viz import lba_correspondences, method_pictures, plot_correspondences

    cfg = tiny_config("lba")
    torch.manual_seed(0)
    method = build_method(cfg, 6)
    assert method_pictures(method) == ["correspondences"]
    samples = _images(tmp_path)
    data = lba_correspondences(method, [(samples[0], samples[1]), (samples[2], samples[3])], cfg.data.height,
                               cfg.data.width)
    h, w = (int(x) for x in data["size"])
    assert data["prob"].shape == (2, h * w, h * w) and data["coattention"].shape == (2, h, w)
    np.testing.assert_allclose(data["prob"].sum(-1), 1.0, rtol=1e-4)
    check_png(plot_correspondences(data, tmp_path / "corr.png"))
    with pytest.raises(ValueError, match="prob must be"):
        plot_correspondences({**data, "prob": data["prob"][:, :1]}, tmp_path / "bad.png")


def test_validation_figures_are_images(tmp_path):
    pytest.importorskip("sklearn")
    from vireid.methods import build_method
    from vireid.viz.validation import validation_figures

    cfg = tiny_config("baseline")
    torch.manual_seed(0)
    method = build_method(cfg, 6).eval()
    samples = _images(tmp_path, 8)
    query = [s for s in samples if s.modality is Modality.INFRARED]
    gallery = [s for s in samples if s.modality is Modality.VISIBLE]
    out = validation_figures(method, query, gallery, height=cfg.data.height, width=cfg.data.width, topk=3)
    assert set(out) == {"ranklist", "embedding"}
    assert all(a.ndim == 3 and a.shape[2] == 3 and a.dtype == np.uint8 and a.var() > 50 for a in out.values())


def test_importing_viz_and_the_commands_loads_neither_torch_nor_matplotlib():
    code = ("import sys, vireid.viz, vireid.report, vireid.report.cli\n"
            "heavy = [m for m in ('torch', 'matplotlib', 'sklearn') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "from vireid.viz import plot_cmc\n"
            "assert 'matplotlib' not in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_every_public_name_resolves():
    import vireid.report
    import vireid.viz

    for module in (vireid.viz, vireid.report):
        for name in module.__all__:
            assert getattr(module, name) is not None, name
    with pytest.raises(AttributeError):
        vireid.viz.no_such_name  # noqa: B018
