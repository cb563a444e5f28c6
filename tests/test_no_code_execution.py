"""No code runs from a file a user was handed: a pickle named as an index's checkpoint is refused by name by
every command that loads the recorded model (issue 13, item 2)."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest

from tests.test_serve_helpers import make_gallery_folder, trained_run
from vireid.cli import main


class _Plant:
    """Unpickling this creates a marker file: proof that loading executed code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def booby_trapped(tmp_path_factory):
    from vireid.inference import FeatureExtractor
    from vireid.serve.gallery import build_index

    run, _ = trained_run(tmp_path_factory)
    base = tmp_path_factory.mktemp("trap")
    gallery = make_gallery_folder(base / "gallery")
    build_index(FeatureExtractor(run), gallery, base / "index")
    marker = base / "code-ran"
    evil = base / "evil.pt"
    evil.write_bytes(pickle.dumps({"model": _Plant(marker), "method": "baseline", "config": {}, "num_classes": 2}))
    meta = json.loads((base / "index" / "meta.json").read_text())
    meta["model"]["checkpoint"] = str(evil)
    (base / "index" / "meta.json").write_text(json.dumps(meta))
    return {"index": base / "index", "gallery": gallery, "evil": evil, "marker": marker,
            "query": sorted(gallery.rglob("*.jpg"))[0]}


@pytest.mark.parametrize("command", ["search", "add", "serve-app"])
def test_a_pickle_recorded_as_the_checkpoint_is_refused_without_running(command, booby_trapped, tmp_path, capsys):
    t = booby_trapped
    if command == "serve-app":
        pytest.importorskip("fastapi")
        from vireid.core import CheckpointError
        from vireid.serve.app import create_app

        with pytest.raises(CheckpointError, match=str(t["evil"])):
            create_app(t["index"])
    else:
        argv = (["search", str(t["index"]), str(t["query"]), "--modality", "visible"] if command == "search" else
                ["index", "add", str(t["index"]), "--images", str(shutil.copytree(t["gallery"], tmp_path / "g")),
                 "--modality", "visible"])
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert str(t["evil"]) in err and "Traceback" not in err
    assert not t["marker"].exists(), "loading the checkpoint executed code from the file"


def test_other_codebases_weights_run_no_code(tmp_path):
    """JSIA-ReID's official files and UNIT's checkpoints are read with weights_only too: a planted pickle is
    refused by name, and nothing it carries runs."""
    import torch

    from tests.helpers import tiny_config
    from vireid.core import CheckpointError
    from vireid.methods import build_method
    from vireid.methods.d2rl import load_unit_weights
    from vireid.methods.jsia import load_official_weights

    marker = tmp_path / "code-ran"
    evil = tmp_path / "gen_00010000.pt"
    evil.write_bytes(pickle.dumps({"a": _Plant(marker), "b": {}}))
    torch.manual_seed(0)
    d2rl = build_method(tiny_config("d2rl"), 4)
    with pytest.raises(CheckpointError, match=f"cannot read {evil}"):
        load_unit_weights(d2rl, evil)
    jsia = build_method(tiny_config("jsia"), 4)
    with pytest.raises(CheckpointError, match=f"cannot read {evil}"):
        load_official_weights(jsia, [evil] * 4)
    assert not marker.exists()
