"""Bad dataset copies (issue 13): symlink loops, dangling image symlinks and zero-byte images.

Decisions (docs/datasets.md, "Broken copies"): a symlink loop is a layout problem in every reader
(LayoutError, `vireid data check` exit 1); a dangling symlink is a warning in the readers (training
starts without it) and a problem in `vireid data check`, except where an index file lists the image
(RegDB, LLCM training lists), which is a problem everywhere; a zero-byte image is found by a stat in
`vireid data check` (no --decode needed) and is a one-line DatasetError naming it in training.
"""

from __future__ import annotations

import os
import re
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.engine_fixtures import config_args, make_tiny_sysu
from tests.test_datasets_layouts import make_folder, make_llcm, make_regdb, make_sysu
from vireid.cli import main
from vireid.core import DatasetError, LayoutError, Modality, Sample
from vireid.data.cache import ImageCache
from vireid.data.check import check_dataset
from vireid.data.datasets import load_dataset
from vireid.data.datasets.base import ReIDDataset, build_label_map


def _loop(folder: Path, a: str, b: str) -> Path:
    """Two symlinks that point at each other; returns the first."""
    folder.mkdir(parents=True, exist_ok=True)
    os.symlink(b, folder / a)
    os.symlink(a, folder / b)
    return folder / a


def _link(path: Path, target: str = "gone.jpg") -> Path:
    """A symlink at `path` to `target` (relative to its folder), replacing a file that is there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():
        path.unlink()
    os.symlink(target, path)
    return path


def _self_link(path: Path) -> Path:
    """Replace the file or folder at `path` by a symlink to itself."""
    if path.is_dir():
        shutil.rmtree(path)
    return _link(path, path.name)


def _empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def _first_listed(root: Path, idx: str) -> Path:
    """The image on line 1 of an index file."""
    return root / (root / "idx" / idx).read_text().splitlines()[0].rsplit(None, 1)[0]


@dataclass(frozen=True)
class Case:
    name: str  # the reader
    build: Callable[[Path], Path]  # makes a clean layout at the given path, returns the root
    bad: Callable[[Path], Path]  # breaks the layout, returns the path the report must name
    line: str  # what one problem line starts with; {p} is that path, {root} the root
    reader: str  # "raises" (LayoutError), "warns" (loads without it) or "loads" (the reader does not look)


CASES = {
    # symlink loops: a layout problem naming the path, in every reader
    "sysu-image-loop": Case("sysu", make_sysu, lambda r: _loop(r / "cam1" / "0001", "a.jpg", "b.jpg"),
                            "symlink loop at {p} -> b.jpg", "raises"),
    "sysu-folder-link-to-parent": Case("sysu", make_sysu, lambda r: _link(r / "cam1" / "0001" / "up", ".."),
                                       "symlink loop at {p} -> ..", "raises"),
    "sysu-camera-folder-loop": Case("sysu", make_sysu, lambda r: _self_link(r / "cam2"),
                                    "symlink loop at {p} -> cam2", "raises"),
    "regdb-listed-image-loop": Case(
        "regdb", make_regdb, lambda r: _self_link(_first_listed(r, "train_visible_1.txt")),
        "{root}/idx/train_visible_1.txt:1: symlink loop at {p}", "raises"),
    "llcm-listed-image-loop": Case(
        "llcm", make_llcm, lambda r: _self_link(_first_listed(r, "train_nir.txt")),
        "{root}/idx/train_nir.txt:1: symlink loop at {p}", "raises"),
    "llcm-test-image-loop": Case("llcm", make_llcm, lambda r: _loop(r / "test_nir" / "cam4" / "0005", "a.jpg", "b.jpg"),
                                 "symlink loop at {p} -> b.jpg", "raises"),
    "folder-image-loop": Case("folder", make_folder, lambda r: _loop(r / "visible" / "cam1" / "2", "a.png", "b.png"),
                              "symlink loop at {p} -> b.png", "raises"),
    "folder-camera-folder-loop": Case("folder", make_folder, lambda r: _loop(r / "infrared", "cam8", "cam9"),
                                      "symlink loop at {p} -> cam9", "raises"),
    "folder-person-link-to-parent": Case("folder", make_folder,
                                         lambda r: _link(r / "visible" / "cam2" / "9", "../.."),
                                         "symlink loop at {p} -> ../..", "raises"),
    # dangling image symlinks: a warning in the readers, a problem in `vireid data check`
    "sysu-dangling-image": Case("sysu", make_sysu, lambda r: _link(r / "cam3" / "0002" / "0009.jpg"),
                                "dangling symlink {p} -> gone.jpg", "warns"),
    "llcm-dangling-test-image": Case("llcm", make_llcm, lambda r: _link(r / "test_vis" / "cam2" / "0004" / "x.jpg"),
                                     "dangling symlink {p} -> gone.jpg", "warns"),
    "folder-dangling-image": Case("folder", make_folder, lambda r: _link(r / "infrared" / "3" / "1" / "009.png"),
                                  "dangling symlink {p} -> gone.jpg", "warns"),
    "folder-dangling-person-folder": Case("folder", make_folder,
                                          lambda r: _link(r / "visible" / "cam1" / "7", "/nonexistent/7"),
                                          "dangling symlink {p} -> /nonexistent/7", "warns"),
    # ... except an image an index file lists: that split is broken, a problem everywhere
    "regdb-listed-dangling-image": Case(
        "regdb", make_regdb,
        lambda r: _link(_first_listed(r, "train_thermal_1.txt"), "gone.bmp"),
        "{root}/idx/train_thermal_1.txt:1: dangling symlink {p} -> gone.bmp", "raises"),
    # zero-byte images: a free stat in `vireid data check`, no --decode needed
    "sysu-empty-image": Case("sysu", make_sysu, lambda r: _empty(r / "cam6" / "0004" / "0001.jpg"),
                             "image {p} is empty (0 bytes)", "loads"),
    "regdb-empty-image": Case("regdb", make_regdb, lambda r: _empty(_first_listed(r, "test_thermal_1.txt")),
                              "image {p} is empty (0 bytes)", "loads"),
    "llcm-empty-image": Case("llcm", make_llcm, lambda r: _empty(_first_listed(r, "train_vis.txt")),
                             "image {p} is empty (0 bytes)", "loads"),
    "folder-empty-image": Case("folder", make_folder, lambda r: _empty(r / "visible" / "cam2" / "3" / "001.png"),
                               "image {p} is empty (0 bytes)", "loads"),
}


@pytest.mark.parametrize("case_id", list(CASES))
def test_bad_dataset_copy(case_id, tmp_path, capsys):
    case = CASES[case_id]
    root = case.build(tmp_path / case.name)
    bad = case.bad(root)
    expected = case.line.format(p=bad, root=root)

    # `vireid data check`: exit 1, the problem on a line of its own, never a traceback
    assert main(["data", "check", case.name, str(root)]) == 1
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if line.startswith(expected)], out
    if case.reader == "warns":
        assert "dangling symlinks among the images and folders: 1" in out

    # the reader, as training calls it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if case.reader == "raises":
            with pytest.raises(LayoutError) as info:
                load_dataset(case.name, root)
            assert [p for p in info.value.problems if p.startswith(expected) and "\n" not in p]
            return
        ds = load_dataset(case.name, root)
    paths = {s.path for split in (ds.train, ds.val, ds.test) for s in split}
    messages = [str(w.message) for w in caught]
    if case.reader == "warns":
        assert [m for m in messages if m.startswith(expected)], messages
        assert str(bad) not in paths
    else:
        assert str(bad) in paths


def test_check_reports_an_empty_image_once_with_and_without_decode(tmp_path):
    root = make_sysu(tmp_path / "S")
    empty = _empty(root / "cam2" / "0004" / "0002.jpg")
    line = f"image {empty} is empty (0 bytes); re-copy or re-extract it from the original archive"
    fast = check_dataset("sysu", root, progress=False)
    assert fast.problems == [line]
    assert "image sizes read (stat) for 60 images: 1 empty or unreadable" in fast.checks
    full = check_dataset("sysu", root, decode=True, progress=False, workers=2)
    assert full.problems == [line]  # the decoder finds it too, in the same words: listed once
    assert "decoded 60 images as RGB: 59 ok, 1 failed" in full.checks


def test_image_cache_names_empty_images_before_decoding(tmp_path):
    root = make_sysu(tmp_path / "S")
    ds = load_dataset("sysu", root)
    first, second = sorted(s.path for s in ds.train)[3:5]
    _empty(Path(first))
    _empty(Path(second))
    paths = [s.path for s in ds.train]
    cache_dir = tmp_path / "cache"
    with pytest.raises(DatasetError) as info:
        ImageCache.build(paths, 16, 8, cache_dir, progress=False, num_threads=2)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"image {paths[min(paths.index(first), paths.index(second))]} is empty (0 bytes)")
    assert "1 more images are empty too, `vireid data check` lists them" in message
    assert [p.name for p in cache_dir.iterdir() if not p.name.endswith(".lock")] == []


def _truncated_dataset(root: Path) -> ReIDDataset:
    """Two identities x two modalities, every image a truncated (but not empty) JPEG."""
    make_sysu(root, train=(1, 2), val=(), test=(3,), n=2, cams={1: (1, 3), 2: (1, 3), 3: (1, 3)})
    samples = []
    for pid in (1, 2):
        for cam, mod in ((1, Modality.VISIBLE), (3, Modality.INFRARED)):
            for p in sorted((root / f"cam{cam}" / f"{pid:04d}").iterdir()):
                p.write_bytes(p.read_bytes()[:100])
                samples.append(Sample(str(p), pid, cam, mod))
    return ReIDDataset("tiny", root, train=samples, test=[], label_map=build_label_map(samples))


def test_loader_worker_decode_error_is_one_line(tmp_path):
    from vireid.config import Config
    from vireid.data.loading import build_train_loader

    ds = _truncated_dataset(tmp_path / "S")
    cfg = Config()
    cfg.data.height, cfg.data.width, cfg.data.num_workers, cfg.data.cache = 16, 8, 2, False
    cfg.sampler.num_ids, cfg.sampler.num_pos = 2, 2
    loader, sampler = build_train_loader(ds, cfg.data, cfg.sampler, cfg.augment, cache_dir=None, seed=0,
                                         progress=False)
    sampler.set_epoch(0)
    with pytest.raises(DatasetError) as info:
        for _ in loader:
            pass
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message, message
    assert re.fullmatch(r"image (\S+) \(100 bytes\) cannot be decoded: .*re-extract it from the original archive",
                        message), message
    assert message.split()[1] in {s.path for s in ds.train}


def _train(data_root: Path, out: Path, capsys, *overrides: str) -> tuple[int, str]:
    rc = main(["train", *config_args(data_root, "train.epochs=1", *overrides), "--out", str(out), "--no-progress"])
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("overrides", [("data.cache=true",), ("data.cache=false", "data.num_workers=2")],
                         ids=["cached", "on-the-fly-2-workers"])
def test_train_on_an_empty_image_fails_with_one_line(tmp_path, capsys, overrides):
    root = make_tiny_sysu(tmp_path / "S")
    empty = _empty(root / "cam3" / "0002" / "0001.jpg")
    rc, err = _train(root, tmp_path / "run", capsys, *overrides)
    assert rc == 2
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("vireid train: error:")]
    assert errors == [f"vireid train: error: image {empty} is empty (0 bytes); "
                      "re-copy or re-extract it from the original archive"], err


def test_train_on_a_symlink_loop_is_a_layout_error(tmp_path, capsys):
    root = make_tiny_sysu(tmp_path / "S")
    a = _loop(root / "cam1" / "0003", "0009.jpg", "0010.jpg")
    rc, err = _train(root, tmp_path / "run", capsys)
    assert rc == 2
    assert "Traceback" not in err, err
    assert f"vireid train: error: 2 problems in the SYSU-MM01 layout at {root}:" in err
    assert [line for line in err.splitlines() if line.startswith(f"  symlink loop at {a} -> 0010.jpg: ")], err


@pytest.mark.slow
def test_train_starts_despite_a_dangling_symlink_and_warns(tmp_path, capsys):
    root = make_tiny_sysu(tmp_path / "S")
    link = _link(root / "cam6" / "0001" / "0009.jpg")
    with pytest.warns(UserWarning, match=re.escape(f"dangling symlink {link} -> gone.jpg: ")):
        rc, err = _train(root, tmp_path / "run", capsys)
    assert rc == 0, err
