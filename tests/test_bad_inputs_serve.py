"""Bad inputs of the deployment commands: each exits with code 2 and one line naming the file or option, what was
expected and the fix; nothing is left half-written (issue 13, item 5, the serve and index rows)."""

from __future__ import annotations

import errno
import json
import re
import shutil

import pytest

from tests.test_serve_helpers import make_gallery_folder, trained_run
from vireid.cli import main
from vireid.serve.index import GalleryIndex


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from vireid.inference import FeatureExtractor
    from vireid.serve.gallery import build_index

    run, data = trained_run(tmp_path_factory)
    base = tmp_path_factory.mktemp("bad_serve")
    gallery = make_gallery_folder(base / "gallery")
    build_index(FeatureExtractor(run), gallery, base / "index")
    return {"run": run, "gallery": gallery, "index": base / "index", "query": sorted(gallery.rglob("*.jpg"))[0]}


def _damaged_meta(world, tmp_path, change) -> str:
    copy = tmp_path / "idx"
    shutil.copytree(world["index"], copy)
    meta = json.loads((copy / "meta.json").read_text())
    change(meta)
    (copy / "meta.json").write_text(json.dumps(meta))
    return str(copy)


def _full_disk(monkeypatch, target: str) -> None:
    import vireid.serve.index as index_module
    import vireid.utils.atomic as atomic

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    if target == "build":
        monkeypatch.setattr(atomic.os, "replace", full)
    else:
        monkeypatch.setattr(index_module, "_append_npy", full)


CASES = {
    "index build --out is a file": (
        lambda w, t: (t / "file").write_text("x") and ["index", "build", str(w["run"]), "--images", str(w["gallery"]),
                                                       "--out", str(t / "file")],
        r"--out .*/file is a file; an index is a folder: choose a folder path"),
    "search --render is a folder": (
        lambda w, t: ["search", str(w["index"]), str(w["query"]), "--modality", "visible", "--render", str(t)],
        r"cannot write .* it is a folder; give the path of a file to write"),
    "export --out is a folder": (
        lambda w, t: ["export", str(w["run"]), "--out", str(t)],
        r"cannot write .* it is a folder; give the path of a file to write"),
    "meta.json dim is not a number": (
        lambda w, t: ["index", "info", _damaged_meta(w, t, lambda m: m.update(dim="abc"))],
        r"meta.json: 'dim' must be an integer >= 1, got 'abc'; the index is damaged, rebuild it"),
    "meta.json without fingerprint": (
        lambda w, t: ["index", "info", _damaged_meta(w, t, lambda m: m.pop("fingerprint"))],
        r"meta.json has no 'fingerprint' \(expected the model's fingerprint"),
    "serve --port out of range": (
        lambda w, t: ["serve", str(w["index"]), "--port", "99999"],
        r"argument --port: expected a port number 0..65535, got '99999'"),
    "serve --max-upload-mb negative": (
        lambda w, t: ["serve", str(w["index"]), "--max-upload-mb", "-1"],
        r"argument --max-upload-mb: expected a number > 0, got '-1'"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_one_line_and_exit_code_2(case, world, tmp_path, capsys):
    argv_of, message = CASES[case]
    argv = argv_of(world, tmp_path)
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse refuses a bad option value with exit code 2
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2, err
    assert re.search(message, err), err
    assert "Traceback" not in err


@pytest.mark.parametrize("command", ["build", "add"])
def test_a_full_disk_is_named_and_leaves_the_index_as_it_was(command, world, tmp_path, monkeypatch, capsys):
    out = tmp_path / "index"
    if command == "add":
        shutil.copytree(world["index"], out)
        # a copy of the gallery under another root: every image is new to the index
        extra = tmp_path / "more"
        shutil.copytree(world["gallery"] / "visible", extra)
        argv = ["index", "add", str(out), "--images", str(extra), "--modality", "visible"]
    else:
        argv = ["index", "build", str(world["run"]), "--images", str(world["gallery"]), "--out", str(out),
                "--no-progress"]
    _full_disk(monkeypatch, command)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "the disk is full" in err and "Traceback" not in err
    monkeypatch.undo()
    if command == "add":
        assert len(GalleryIndex.open(out)) == len(GalleryIndex.open(world["index"]))
    else:
        assert not out.exists() and not list(tmp_path.glob(".index.*.tmp"))
