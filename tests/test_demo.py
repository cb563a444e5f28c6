"""The demo reads its dataset once (training, the four evaluations and the report share it) and writes the run's
report; the numbers themselves are checked on the full demo (see the issue notes), not here."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_demo_reads_its_dataset_once_and_writes_its_report(tmp_path, monkeypatch):
    import vireid.data.datasets as datasets
    import vireid.engine.trainer as trainer
    from vireid.demo import run_demo

    calls = []
    real = datasets.load_dataset

    def counting(name, root, **options):
        calls.append((name, str(root)))
        return real(name, root, **options)

    monkeypatch.setattr(datasets, "load_dataset", counting)
    monkeypatch.setattr(trainer, "load_dataset", counting)
    demo = run_demo(tmp_path / "out", data_root=tmp_path / "data", epochs=1, ids=40, progress=False,
                    overrides=("data.num_workers=0", "train.max_steps_per_epoch=3"))
    assert calls == [("sysu", str(tmp_path / "data"))]
    saved = json.loads((tmp_path / "out" / "demo.json").read_text())
    assert saved["trained"] == demo["trained"] and set(saved["trained"]) == {"all", "indoor"}
    report = (tmp_path / "out" / "report.html").read_text()
    assert '<section id="demo">' in report and "<pre>SYSU-layout synthetic set" in report
    for name in ("training_curves", "cmc", "ranklist_best", "tsne", "modality_gap", "camera_rank1"):
        assert f'src="figures/{name}.png"' in report
        assert (tmp_path / "out" / "figures" / f"{name}.png").stat().st_size > 1000
    assert saved["report_seconds"] > 0
