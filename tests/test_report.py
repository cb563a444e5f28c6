"""`vireid report` and `vireid viz` on a tiny trained run: every figure written, decodable, of the expected size and
not blank; the page references only files that exist; the per-camera heatmap and the rank lists agree with the
Evaluator; method pictures appear for MPANet and LbA and not for the baseline; the page opens in headless
Chromium; the TensorBoard switch logs figures at validation."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.engine_fixtures import make_tiny_sysu, tiny_train_config
from tests.test_serve_helpers import trained_run
from tests.test_viz import VARIANCE_FLOOR, check_png, pixels
from vireid.cli import main as cli_main
from vireid.core import ConfigError, EvalTrial
from vireid.engine.evaluator import Evaluator

pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")

OPTIONS = {"trials": 2}  # the run's SYSU all-search single-shot protocol, two gallery trials
SECTIONS = ("run", "training", "results", "cmc", "ranklists", "embeddings", "modality-gap", "cameras")
FIGURES = ("training_curves", "cmc", "ranklist_best", "ranklist_median", "ranklist_worst", "tsne", "modality_gap",
           "camera_rank1")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """(report folder, run dir) of the shared tiny baseline run's report."""
    from vireid.report import make_report

    run, _ = trained_run(tmp_path_factory)
    out = tmp_path_factory.mktemp("report")
    page = make_report(run, options=OPTIONS, out=out, progress=False)
    assert page == out / "report.html"
    return out, run


def _inputs(run):
    """The ReportInputs of the run (the same features and trials the report used)."""
    from vireid.config import options_dict
    from vireid.inference import load_trained
    from vireid.protocols import load_protocol_dataset
    from vireid.report import prepare_inputs

    cfg, method, _ = load_trained(run)
    opts = {**options_dict(cfg.eval.options), **OPTIONS}
    dataset = load_protocol_dataset(cfg.eval.protocol, cfg.data.root, **opts)
    return prepare_inputs(method, cfg, dataset.test, protocol=cfg.eval.protocol, options=opts, root=dataset.root,
                          progress=False), cfg


def _ranklist_size(rows: list[dict], tile=(128, 64), gap=12) -> tuple[int, int]:
    """The rank-list sheet's size: cells of tile + 8 px, caption lines of 12 px + 4, the query column set apart."""
    cols = 1 + max(len(r["order"]) + (r["first_match"] > len(r["order"])) for r in rows)
    lines = 3  # the query's identity, camera + modality, AP
    return cols * (tile[1] + 8) + gap, len(rows) * (tile[0] + 8 + 12 * lines + 4)


def test_the_report_writes_the_page_and_every_figure(report):
    out, _ = report
    data = json.loads((out / "report.json").read_text())
    assert set(data["figures"]) == set(FIGURES)
    assert data["sections"] == list(SECTIONS)
    records = [json.loads(x) for x in (report[1] / "metrics.jsonl").read_text().splitlines()]
    from vireid.viz.figures import SIZES, curve_panels, curves_size

    expected = {"training_curves": pixels(curves_size(len(curve_panels(records)))), "cmc": pixels(SIZES["cmc"]),
                "tsne": pixels(SIZES["tsne"]), "modality_gap": pixels(SIZES["modality_gap"]),
                "camera_rank1": pixels(SIZES["camera_rank1"])}
    for group in ("best", "median", "worst"):
        expected[f"ranklist_{group}"] = _ranklist_size(data["ranklists"][group])
    for name, rel in data["figures"].items():
        check_png(out / rel, expected[name])
    assert not list(out.rglob(".*.tmp"))


def test_the_page_references_only_files_that_exist_and_has_every_section(report):
    out, _ = report
    page = (out / "report.html").read_text()
    refs = re.findall(r'(?:src|href)="([^"]+)"', page)
    files = [r for r in refs if not r.startswith("#")]
    assert len(files) == len(FIGURES)
    for ref in files:
        assert not re.match(r"^[a-z]+:", ref) and not ref.startswith("/"), ref  # relative: opens from disk
        assert (out / ref).is_file(), ref
    for section in SECTIONS:
        assert f'<section id="{section}">' in page and f'href="#{section}"' in page
    assert 'id="method-pictures"' not in page  # the baseline has no method pictures
    assert "± " in page and "Re-ranking" not in page


def test_the_camera_heatmap_equals_the_evaluators_first_hits_by_hand(report):
    """Each cell: the trials' queries of one camera against the gallery cut to one camera, scored by the Evaluator;
    rank-1 = queries whose first hit is 1 / queries with a first hit."""
    out, run = report
    cams = json.loads((out / "report.json").read_text())["camera_rank1"]
    inputs, cfg = _inputs(run)
    hits: dict[tuple[int, int], int] = {}
    valid: dict[tuple[int, int], int] = {}
    feats = inputs.features[inputs.feature]
    pos = {s: i for i, s in enumerate(inputs.samples)}
    for trial in inputs.trials:
        for qc in cams["query_cameras"]:
            for gc in cams["gallery_cameras"]:
                query = [s for s in trial.query if s.camid == qc]
                gallery = [s for s in trial.gallery if s.camid == gc]
                if not ({s.pid for s in query} & {s.pid for s in gallery}) or (qc, gc) == (3, 2):
                    continue  # no true match there (or the SYSU rule removes the whole pair): the evaluator refuses
                sub = EvalTrial(f"{trial.name}/{qc}-{gc}", query, gallery, trial.rule, trial.cmc_kind)
                res = Evaluator([sub], features=("f",), distance=inputs.distance).run(
                    lambda batch: {"f": feats[[pos[s] for s in batch]]})
                first_hit = next(iter(res.protocols.values())).features["f"].trials[0].metrics.first_hit
                hits[qc, gc] = hits.get((qc, gc), 0) + int((first_hit == 1).sum())
                valid[qc, gc] = valid.get((qc, gc), 0) + int((first_hit > 0).sum())
    for i, qc in enumerate(cams["query_cameras"]):
        for j, gc in enumerate(cams["gallery_cameras"]):
            if (qc, gc) not in valid:
                assert cams["rank1"][i][j] is None and cams["valid"][i][j] == 0
                continue
            assert cams["hits"][i][j] == hits[qc, gc] and cams["valid"][i][j] == valid[qc, gc]
            assert cams["rank1"][i][j] == pytest.approx(hits[qc, gc] / valid[qc, gc])


def test_rank_list_tiles_follow_the_evaluators_ranking(report):
    """The tiles are the trial's gallery sorted (stably) by the Evaluator's distance after the rule's filter; the
    first true match among them sits where the Evaluator's first hit says, and AP is the Evaluator's."""
    out, run = report
    data = json.loads((out / "report.json").read_text())["ranklists"]
    inputs, _ = _inputs(run)
    trial = next(t for t in inputs.trials if t.name == data["trial"])
    result = inputs.trial_result(trial)
    # the Evaluator's distance: cosine on its L2-normalised features (what ReportInputs keeps), -q.g
    q = torch.from_numpy(inputs.features[inputs.feature][inputs.rows(trial.query)])
    g = torch.from_numpy(inputs.features[inputs.feature][inputs.rows(trial.gallery)])
    dist = -(q @ g.T)
    ap = result.metrics.ap
    shown = {g_: [r["query"] for r in data[g_]] for g_ in ("best", "median", "worst")}
    valid = np.flatnonzero(np.isfinite(ap))
    assert min(ap[shown["best"]]) >= max(ap[shown["worst"]]) and max(ap[valid]) == ap[shown["best"][0]]
    for group in ("best", "median", "worst"):
        for row in data[group]:
            qi = row["query"]
            query = trial.query[qi]
            order = torch.argsort(dist[qi], stable=True).tolist()
            if trial.rule == "sysu_location" and query.camid == 3:
                order = [i for i in order if trial.gallery[i].camid != 2]
            assert row["order"] == order[: len(row["order"])]
            assert [h["path"] for h in row["hits"]] == [trial.gallery[i].path for i in row["order"]]
            assert row["ap"] == pytest.approx(float(ap[qi]))
            # identity-level first hit = distinct identities ranked before the first true match, plus one
            first = next(k for k, i in enumerate(order) if trial.gallery[i].pid == query.pid)
            assert row["first_match"] == first + 1
            assert row["first_hit"] == int(result.metrics.first_hit[qi])
            assert row["first_hit"] == len({trial.gallery[i].pid for i in order[:first]}) + 1


@pytest.mark.slow
def test_the_page_opens_in_headless_chromium_with_every_section(report, tmp_path):
    from tests.test_serve_browser import CHROMEDRIVER, CHROMIUM, _missing_browser

    why = _missing_browser()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {why}")
        pytest.skip(why)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1280,1000", f"--user-data-dir={tmp_path / 'chrome-profile'}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=opts)
    try:
        driver.set_page_load_timeout(30)
        out, _ = report
        driver.get((out / "report.html").resolve().as_uri())
        assert driver.title.startswith("vireid report")
        for section in SECTIONS:
            assert driver.find_element(By.ID, section).find_element(By.TAG_NAME, "h2").text
        loaded = driver.execute_script(
            "return [...document.images].map(i => [i.getAttribute('src'), i.complete && i.naturalWidth])")
        assert len(loaded) == len(FIGURES) and all(w and w > 0 for _, w in loaded), loaded
        height = driver.execute_script("return document.body.scrollHeight")
        driver.set_window_size(1280, min(int(height) + 100, 16000))
        shot = tmp_path / "report_page.png"
        assert driver.save_screenshot(str(shot))
        with Image.open(shot) as img:
            assert np.asarray(img.convert("L"), dtype=np.float64).var() > VARIANCE_FLOOR
        if os.environ.get("VIREID_SCREENSHOT_DIR"):
            dest = Path(os.environ["VIREID_SCREENSHOT_DIR"])
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, dest / shot.name)
    finally:
        driver.quit()


def test_viz_draws_each_figure_alone_in_every_format(report, tmp_path, capsys):
    _, run = report
    for kind, name in (("curves", "c.svg"), ("cmc", "cmc.pdf"), ("ranklist", "r.png"), ("gap", "g.png"),
                       ("cameras", "k.png"), ("tsne", "t.png")):
        args = ["viz", kind, str(run), "--out", str(tmp_path / name), "--no-progress"]
        args += ["--option", "trials=2"] if kind != "curves" else []
        assert cli_main([*args, "--which", "worst"] if kind == "ranklist" else args) == 0
        assert f"{kind}: {tmp_path / name}" in capsys.readouterr().out
    assert (tmp_path / "c.svg").read_text().lstrip().startswith("<?xml")
    assert (tmp_path / "cmc.pdf").read_bytes().startswith(b"%PDF")
    for name in ("r.png", "g.png", "k.png", "t.png"):
        check_png(tmp_path / name)
    # the method pictures a baseline does not have are refused in one line
    assert cli_main(["viz", "patterns", str(run), "--out", str(tmp_path / "p.png"), "--no-progress"]) == 2
    assert "has no patterns picture" in capsys.readouterr().err
    assert cli_main(["viz", "translations", str(run), "--out", str(tmp_path / "x.png")]) == 2
    assert "makes no translated images" in capsys.readouterr().err


def test_viz_draws_a_users_npz_features(report, tmp_path, capsys):
    _, run = report
    inputs, _ = _inputs(run)
    samples = inputs.samples
    npz = tmp_path / "feats.npz"
    np.savez(npz, features_bn=inputs.features["bn"], pids=np.array([s.pid for s in samples]),
             camids=np.array([s.camid for s in samples]), modalities=np.array([s.modality.value for s in samples]),
             paths=np.array([s.path for s in samples]))
    assert cli_main(["viz", "gap", str(npz)]) == 0
    check_png(tmp_path / "feats_modality_gap.png")
    assert cli_main(["viz", "tsne", str(npz), "--out", str(tmp_path / "t.png")]) == 0
    check_png(tmp_path / "t.png")
    assert cli_main(["viz", "cmc", str(npz), "--protocol", "sysu", "--option", "trials=2",
                     "--out", str(tmp_path / "cmc.png")]) == 0
    check_png(tmp_path / "cmc.png")
    capsys.readouterr()
    assert cli_main(["viz", "cameras", str(npz), "--out", str(tmp_path / "k.png")]) == 2
    assert "needs --protocol" in capsys.readouterr().err
    assert cli_main(["viz", "patterns", str(npz)]) == 2
    assert "needs the trained method" in capsys.readouterr().err


def test_report_command_and_its_errors(report, tmp_path, capsys):
    _, run = report
    assert cli_main(["report", str(run), "--out", str(tmp_path / "r"), "--option", "trials=1", "--rerank",
                     "--no-progress"]) == 0
    assert f"report: {tmp_path / 'r' / 'report.html'}" in capsys.readouterr().out
    page = (tmp_path / "r" / "report.html").read_text()
    results = page.split('<section id="results">')[1].split("</section>")[0]
    assert results.count("<table>") == 2 and "With k-reciprocal re-ranking" in results  # reported separately
    assert cli_main(["report", str(tmp_path / "nothing")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="unknown figure kind"):
        from vireid.report.single import make_figure

        make_figure("bogus", run)


@pytest.mark.slow
@pytest.mark.parametrize("method,picture", [("mpanet", "pattern_maps"), ("lba", "correspondences")])
def test_method_pictures_appear_for_mpanet_and_lba(tmp_path_factory, method, picture):
    from vireid.engine.trainer import Trainer
    from vireid.report import make_report

    base = tmp_path_factory.mktemp(f"report_{method}")
    data = make_tiny_sysu(base / "sysu")
    Trainer(tiny_train_config(data, "train.epochs=1", method=method), base / "run").fit()
    page = make_report(base / "run", options={"trials": 1}, progress=False)
    html = page.read_text()
    assert 'id="method-pictures"' in html and f'src="figures/{picture}.png"' in html
    check_png(page.parent / "figures" / f"{picture}.png")
    other = {"pattern_maps": "correspondences", "correspondences": "pattern_maps"}[picture]
    assert f"figures/{other}.png" not in html


def test_tensorboard_figures_are_logged_at_validation_when_asked(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from vireid.engine.trainer import Trainer

    data = make_tiny_sysu(tmp_path / "sysu")
    val = ["train.select_best=val", "train.eval_every=1", "data.train_split=train", "train.epochs=1"]
    Trainer(tiny_train_config(data, *val, "train.tensorboard_figures=true"), tmp_path / "on").fit()
    Trainer(tiny_train_config(data, *val), tmp_path / "off").fit()
    tags = {}
    for name in ("on", "off"):
        acc = EventAccumulator(str(tmp_path / name / "tensorboard"), size_guidance={"images": 0})
        acc.Reload()
        tags[name] = set(acc.Tags()["images"])
    assert tags["on"] == {"val/ranklist", "val/embedding"} and tags["off"] == set()


def test_generative_methods_get_their_translations_and_others_none(tmp_path):
    from tests.helpers import tiny_config
    from tests.test_viz import _images
    from vireid.methods import build_method
    from vireid.report import figures as F

    samples = _images(tmp_path, 6)
    cfg = tiny_config("jsia")
    torch.manual_seed(0)
    out = F.translation_figure(build_method(cfg, 6), samples, cfg.data.height, cfg.data.width,
                               tmp_path / "translations.png", pairs=2)
    assert out is not None
    check_png(out)
    base = tiny_config("baseline")
    assert F.translation_figure(build_method(base, 6), samples, base.data.height, base.data.width,
                                tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without a GPU")
@pytest.mark.parametrize("command", ["report", "viz"])
def test_a_device_this_machine_lacks_is_one_line_naming_the_option(tmp_path, capsys, command):
    args = [command, *(["gap"] if command == "viz" else []), str(tmp_path / "no-run"), "--device", "cuda"]
    assert cli_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"vireid {command}: error: --device=cuda: no CUDA GPU is usable here") and "\n" not in err
