"""SynthVI: determinism, layouts (SYSU-MM01, RegDB, LLCM), the modality gap, output safety and the CLI."""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vireid.core import ConfigError, DatasetError
from vireid.data.synthetic import GENERATOR, generate, read_manifest, shot_scene, synthesize
from vireid.data.synthetic.layouts import PLANNERS

TINY = dict(size=(32, 16), progress=False)
SMALL_ARGS = {"sysu": dict(ids=12, images_per_camera=2), "regdb": dict(ids=6, images_per_camera=10),
              "llcm": dict(ids=12, images_per_camera=2)}


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under root, keyed by its relative path."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict[str, Path]:
    """One tiny set per layout (seed 0, one worker), shared by the structure tests."""
    base = tmp_path_factory.mktemp("synth")
    return {lay: generate(lay, base / lay, seed=0, workers=1, **SMALL_ARGS[lay], **TINY) for lay in PLANNERS}


# ------------------------------------------------------------------------------------------ determinism


@pytest.mark.parametrize("layout", ["sysu", "regdb", "llcm"])
def test_same_arguments_same_bytes_any_workers_and_seed_changes_bytes(layout, sets, tmp_path):
    one_worker = tree_digest(sets[layout])
    two_workers = generate(layout, tmp_path / "b", seed=0, workers=2, **SMALL_ARGS[layout], **TINY)
    assert tree_digest(two_workers) == one_worker
    other_seed = tree_digest(generate(layout, tmp_path / "c", seed=1, workers=2, **SMALL_ARGS[layout], **TINY))
    images = [k for k in one_worker if k.endswith((".jpg", ".bmp"))]
    assert len(images) > 50
    same = [k for k in images if other_seed.get(k) == one_worker[k]]
    assert not same, f"{len(same)} images identical across seeds"


def test_manifest_is_portable_and_complete(sets):
    root = sets["sysu"]
    text = (root / "manifest.json").read_text()
    assert str(root) not in text and str(root.parent) not in text  # no absolute paths
    man = json.loads(text)
    assert man["generator"] == GENERATOR and man["layout"] == "sysu"
    assert man["arguments"] == {"layout": "sysu", "ids": 12, "images_per_camera": 2, "size": [32, 16],
                                "difficulty": 0.5, "seed": 0}
    # Counts agree with the files on disk, camera by camera.
    on_disk = defaultdict(int)
    for p in root.glob("cam*/*/*.jpg"):
        on_disk[p.parts[-3]] += 1
    from_manifest = defaultdict(int)
    for split in man["counts"]["splits"].values():
        for cam, c in split["cameras"].items():
            from_manifest[cam] += c["images"]
    assert dict(on_disk) == dict(from_manifest)
    assert man["counts"]["images"] == sum(on_disk.values())
    assert read_manifest(root) == man


# ------------------------------------------------------------------------------------------ layouts


def _ids(path: Path) -> list[int]:
    lines = path.read_text().splitlines()
    assert len(lines) == 1, f"{path} must hold one line"
    return [int(x) for x in lines[0].split(",")]


def test_sysu_layout(sets):
    root = sets["sysu"]
    assert sorted(p.name for p in root.iterdir()) == ["cam1", "cam2", "cam3", "cam4", "cam5", "cam6", "exp",
                                                      "manifest.json"]
    split = {n: _ids(root / "exp" / f"{n}_id.txt") for n in ("train", "val", "test", "available")}
    assert sorted(split["train"] + split["val"] + split["test"]) == split["available"] == list(range(1, 13))
    assert all(len(split[n]) >= 1 for n in ("train", "val", "test"))
    seen = defaultdict(set)  # pid -> cameras
    for cam in range(1, 7):
        for pdir in (root / f"cam{cam}").iterdir():
            assert re.fullmatch(r"\d{4}", pdir.name), pdir
            names = sorted(p.name for p in pdir.iterdir())
            assert names == [f"{i:04d}.jpg" for i in range(1, len(names) + 1)], pdir  # 1-based, consecutive
            assert 1 <= len(names) <= 3  # 2 +- 2 // 4
            seen[int(pdir.name)].add(cam)
    for pid in split["available"]:
        assert seen[pid] & {1, 2, 4, 5} and seen[pid] & {3, 6}, f"pid {pid} lacks a modality: {seen[pid]}"
    test = set(split["test"])
    cam1 = {p for p in test if 1 in seen[p]}
    assert cam1 == {p for p in test if 2 in seen[p]}  # the same subset in cam1 and cam2
    assert 0 < len(cam1) < len(test)  # indoor search has invalid queries
    with (Image.open(next((root / "cam3").glob("*/*.jpg"))) as ir,
          Image.open(next((root / "cam1").glob("*/*.jpg"))) as rgb):
        assert ir.mode == rgb.mode == "RGB" and ir.size == rgb.size == (16, 32)
        a = np.asarray(ir)
        assert (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all()  # intensity x 3


def test_sysu_test_split_mimics_real_camera_structure(tmp_path):
    plan = PLANNERS["sysu"](200, 2, 3)
    test = plan.splits["test"]
    assert len(test) == round(200 * 96 / 491) and len(plan.splits["val"]) == round(200 * 99 / 491)
    per_cam = defaultdict(set)
    for s in plan.shots:
        if s.split == "test":
            per_cam[s.scene].add(s.pid)
    assert per_cam[1] == per_cam[2] and len(per_cam[1]) == round(len(test) * 56 / 96)
    for cam in (3, 4, 5, 6):
        assert len(per_cam[cam]) >= 0.9 * len(test)


REGDB_NAME = re.compile(r"(female|male)_(front|back)_([vt])_(\d{5})_(\d+)\.bmp")


def test_regdb_layout_and_idx_files(sets):
    root = sets["regdb"]
    pairs = {}
    for folder, letter in (("Visible", "v"), ("Thermal", "t")):
        for pdir in (root / folder).iterdir():
            names = sorted(p.name for p in pdir.iterdir())
            assert len(names) == 10, pdir
            keys = []
            for n in names:
                m = REGDB_NAME.fullmatch(n)
                assert m and m.group(3) == letter and m.group(5) == pdir.name, n
                keys.append((m.group(1), m.group(2), m.group(4)))  # gender, view, serial
            pairs[(folder, pdir.name)] = sorted(keys)
    for (folder, pid), keys in pairs.items():
        assert keys == pairs[("Thermal" if folder == "Visible" else "Visible", pid)]  # same instants
    with (Image.open(next((root / "Thermal").rglob("*.bmp"))) as th,
          Image.open(next((root / "Visible").rglob("*.bmp"))) as vi):
        assert th.mode == "L" and vi.mode == "RGB" and th.size == vi.size == (16, 32)
    for t in range(1, 11):
        pids_in = {}
        for part in ("train", "test"):
            seqs = []
            for mod in ("visible", "thermal"):
                lines = (root / "idx" / f"{part}_{mod}_{t}.txt").read_text().splitlines()
                rows = [ln.split(" ") for ln in lines]
                assert all(len(r) == 2 and (root / r[0]).is_file() for r in rows)
                assert all(r[0].startswith("Visible/" if mod == "visible" else "Thermal/") for r in rows)
                labels = [int(r[1]) for r in rows]
                folders = [int(r[0].split("/")[1]) for r in rows]
                assert sorted(set(labels)) == list(range(len(set(labels))))  # re-indexed 0..n-1
                assert [sorted(set(folders)).index(f) for f in folders] == labels  # sorted-pid order
                seqs.append(labels)
                pids_in[part] = set(folders)
            assert seqs[0] == seqs[1]  # visible and thermal files of a split share the labels
        assert not pids_in["train"] & pids_in["test"] and len(pids_in["train"]) == 3


def test_regdb_pairs_share_pose_and_position():
    from vireid.data.synthetic.layouts import plan_regdb

    plan = plan_regdb(4, 10, 0)
    by_key = defaultdict(list)
    for s in plan.shots:
        by_key[(s.pid, s.index)].append(shot_scene(s, plan.cameras, 0, 0.5, (64, 32)))
    assert all(len(v) == 2 and v[0] == v[1] for v in by_key.values())
    assert len({v[0] for v in by_key.values()}) == len(by_key)  # but instants differ


LLCM_NAME = re.compile(r"(\d{4})_c(\d{2})_s(\d{6})_f(\d+)_(vis|nir)\.jpg")


def test_llcm_layout_and_idx_files(sets):
    root = sets["llcm"]
    test_ids = _ids(root / "idx" / "test_id.txt")
    labels = {}
    for mod in ("vis", "nir"):
        for line in (root / "idx" / f"train_{mod}.txt").read_text().splitlines():
            rel, label = line.split(" ")
            m = LLCM_NAME.fullmatch(Path(rel).name)
            assert (root / rel).is_file() and rel.startswith(f"{mod}/") and m and m.group(5) == mod
            assert rel.split("/")[1] == m.group(1)
            assert labels.setdefault((mod, int(m.group(1))), int(label)) == int(label)
    train_pids = sorted({p for _, p in labels})
    for mod in ("vis", "nir"):
        assert {p: lab for (m, p), lab in labels.items() if m == mod} == {p: i for i, p in enumerate(train_pids)}
    assert not set(train_pids) & set(test_ids) and sorted(train_pids + test_ids) == list(range(1, 13))
    assert sorted(p.name for p in (root / "test_vis").iterdir()) == [f"cam{c}" for c in range(1, 10)
                                                                      if (root / "test_vis" / f"cam{c}").exists()]
    assert not (root / "test_nir" / "cam3").exists()
    cams = defaultdict(set)
    for mod in ("vis", "nir"):
        for p in (root / f"test_{mod}").glob("cam*/*/*.jpg"):
            m = LLCM_NAME.fullmatch(p.name)
            assert m and m.group(5) == mod and p.parent.name == m.group(1)
            assert p.parent.parent.name == f"cam{int(m.group(2))}"
            cams[(mod, int(m.group(1)))].add(int(m.group(2)))
    for pid in test_ids:
        assert len(cams[("vis", pid)]) >= 2 and len(cams[("nir", pid)]) >= 2


# ------------------------------------------------------------------------------------------ modality gap


def descriptor(path: Path) -> np.ndarray:
    """Mean colour of 8 horizontal bands of the central column + per-channel 8-bin histograms of it."""
    a = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    h, w, _ = a.shape
    c = a[int(0.12 * h):int(0.92 * h), (3 * w) // 8:w - (3 * w) // 8]
    bands = c[: (c.shape[0] // 8) * 8].reshape(8, -1, 3).mean(1)
    hist = [np.histogram(c[..., k], bins=8, range=(0, 1))[0] / c[..., k].size for k in range(3)]
    return np.concatenate([bands.ravel(), *hist])


def test_modality_gap_is_real(tmp_path):
    root = generate("sysu", tmp_path / "gap", ids=40, images_per_camera=3, size=(64, 32), difficulty=0.5,
                    seed=0, workers=2, progress=False)
    paths = sorted(root.glob("cam*/*/*.jpg"))
    cams = np.array([int(p.parts[-3][3:]) for p in paths])
    pids = np.array([int(p.parts[-2]) for p in paths])
    x = np.stack([descriptor(p) for p in paths])
    dist = np.abs(x[:, None] - x[None]).sum(-1)  # L1
    vis, ir = np.isin(cams, [1, 2, 4, 5]), np.isin(cams, [3, 6])

    def rank1(queries: np.ndarray, gallery) -> float:
        hits = []
        for i in np.flatnonzero(queries):
            g = np.flatnonzero(gallery(i))
            if (pids[g] == pids[i]).any():
                hits.append(pids[g[np.argmin(dist[i, g])]] == pids[i])
        return float(np.mean(hits))

    vv = rank1(vis, lambda i: vis & (cams != cams[i]))
    iv = rank1(ir, lambda i: vis)
    ii = rank1(ir, lambda i: ir & (cams != cams[i]))
    chance = 1 / 40
    print(f"rank-1 vis->vis {vv:.3f}  ir->vis {iv:.3f}  ir->ir {ii:.3f}  (chance {chance:.3f})")
    assert vv >= 2 * iv and vv >= iv + 0.2
    assert ii >= 3 * chance


# ------------------------------------------------------------------------------------------ safety


def test_refuses_non_empty_foreign_directory_and_force_replaces_it(tmp_path):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(DatasetError) as err:
        generate("sysu", out, ids=4, images_per_camera=1, **TINY)
    assert str(out) in str(err.value) and "--force" in str(err.value)
    assert (out / "holiday.jpg").read_bytes() == b"precious"
    generate("sysu", out, ids=4, images_per_camera=1, force=True, **TINY)
    assert not (out / "holiday.jpg").exists() and read_manifest(out)["layout"] == "sysu"


def test_previous_set_is_up_to_date_or_replaced(tmp_path):
    out = tmp_path / "set"
    first = synthesize("llcm", out, ids=3, images_per_camera=1, workers=1, **TINY)
    assert not first.up_to_date
    again = synthesize("llcm", out, ids=3, images_per_camera=1, workers=1, **TINY)
    assert again.up_to_date and again.images == first.images
    other = synthesize("sysu", out, ids=4, images_per_camera=1, workers=1, **TINY)  # no --force needed
    assert not other.up_to_date and read_manifest(out)["layout"] == "sysu" and not (out / "idx").exists()


def test_rerun_after_interruption(tmp_path):
    out = tmp_path / "set"
    stale = tmp_path / ".set.synthvi-dead.tmp"
    (stale / "cam1" / "0001").mkdir(parents=True)
    (stale / "cam1" / "0001" / "0001.jpg").write_bytes(b"half")
    generate("sysu", out, ids=4, images_per_camera=1, workers=1, **TINY)
    assert not stale.exists() and read_manifest(out) is not None
    assert [p.name for p in tmp_path.iterdir()] == ["set"]


def test_bad_arguments_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="--ids"):
        generate("sysu", tmp_path / "x", ids=2, **TINY)
    with pytest.raises(ConfigError, match="difficulty"):
        generate("sysu", tmp_path / "x", difficulty=1.5, **TINY)
    with pytest.raises(ConfigError, match="layout"):
        generate("market", tmp_path / "x", **TINY)
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------------ CLI


def test_cli_synth(tmp_path, capsys):
    from vireid.cli import main

    out = tmp_path / "cli"
    argv = ["synth", "--layout", "regdb", "--out", str(out), "--ids", "2", "--size", "32x16", "--seed", "3",
            "--workers", "1", "--no-progress"]
    assert main(argv) == 0
    man = read_manifest(out)
    assert man["arguments"]["size"] == [32, 16] and man["arguments"]["seed"] == 3
    assert "wrote SynthVI regdb" in capsys.readouterr().out
    assert main(argv) == 0 and "up to date" in capsys.readouterr().out
    assert main(["synth", "--layout", "regdb", "--out", str(tmp_path / "bad"), "--size", "32by16"]) == 2
    assert "--size must be HEIGHTxWIDTH" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "a.txt").write_text("x")
    assert main(["synth", "--layout", "sysu", "--out", str(foreign), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert str(foreign) in err and "--force" in err
