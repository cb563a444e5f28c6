"""Dataset readers on tiny fake layouts: counts, ordering, pids, cameras, modalities, options."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.test_datasets_layouts import make_folder, make_llcm, make_regdb, make_sysu, write_image
from vireid.core import ConfigError, DatasetError, Modality  # noqa: E402
from vireid.data.datasets import load_dataset  # noqa: E402
from vireid.data.images import IMAGE_EXTENSIONS, load_rgb  # noqa: E402

V, IR = Modality.VISIBLE, Modality.INFRARED


def by_mod(samples, modality):
    return [s for s in samples if s.modality is modality]


# ---------------------------------------------------------------- SYSU-MM01


def test_sysu_default_train_plus_val_counts_and_labels(tmp_path):
    ds = load_dataset("sysu", make_sysu(tmp_path / "SYSU"))
    # train ids 1,2 + val id 3; 6 cameras x 2 images each
    assert len(by_mod(ds.train, V)) == 3 * 4 * 2
    assert len(by_mod(ds.train, IR)) == 3 * 2 * 2
    assert ds.label_map == {1: 0, 2: 1, 3: 2}
    assert ds.val == []
    assert len(ds.test) == 2 * 6 * 2 and {s.pid for s in ds.test} == {4, 5}
    assert ds.info["split_ids"] == {"train": [1, 2], "val": [3], "test": [4, 5]}
    assert ds.info["rgb_cams"] == [1, 2, 4, 5] and ds.info["ir_cams"] == [3, 6]
    assert ds.info["layout"] == "sysu" and ds.info["synthetic"] is False and ds.info["manifest"] is None
    assert {s.camid for s in by_mod(ds.train, V)} == {1, 2, 4, 5}
    assert {s.camid for s in by_mod(ds.train, IR)} == {3, 6}


def test_sysu_order_matches_agw_listing(tmp_path):
    root = make_sysu(tmp_path / "SYSU", train=(2, 10), val=(7,), test=(4,))
    ds = load_dataset("sysu", root)
    # AGW: ids ascending; RGB cams 1,2,4,5 (IR 3,6), each folder's files sorted.
    expected_rgb = [str(root / f"cam{c}" / f"{pid:04d}" / f"{i:04d}.jpg")
                    for pid in (2, 7, 10) for c in (1, 2, 4, 5) for i in (1, 2)]
    expected_ir = [str(root / f"cam{c}" / f"{pid:04d}" / f"{i:04d}.jpg")
                   for pid in (2, 7, 10) for c in (3, 6) for i in (1, 2)]
    assert [s.path for s in by_mod(ds.train, V)] == expected_rgb
    assert [s.path for s in by_mod(ds.train, IR)] == expected_ir
    assert ds.train_labels()[:8] == [0] * 8


def test_sysu_train_split_keeps_val_apart(tmp_path):
    ds = load_dataset("sysu", make_sysu(tmp_path / "SYSU"), train_split="train")
    assert ds.label_map == {1: 0, 2: 1}
    assert {s.pid for s in ds.val} == {3} and len(ds.val) == 12
    assert len(ds.train) == 24


def test_sysu_train_scene_keeps_one_scene_and_drops_one_modality_ids(tmp_path):
    # id 2 has no infrared image outdoors (cam 6 missing), id 3 none indoors (cam 3 missing)
    root = make_sysu(tmp_path / "S", cams={2: (1, 2, 3, 4, 5), 3: (1, 2, 4, 5, 6)})
    indoor = load_dataset("sysu", root, train_scene="indoor")
    assert {s.camid for s in indoor.train} == {1, 2, 3}
    assert {s.pid for s in indoor.train} == {1, 2} and indoor.label_map == {1: 0, 2: 1}
    outdoor = load_dataset("sysu", root, train_scene="outdoor")
    assert {s.camid for s in outdoor.train} == {4, 5, 6}
    assert {s.pid for s in outdoor.train} == {1, 3} and len(outdoor.train) == 2 * 3 * 2
    assert outdoor.test == load_dataset("sysu", root).test  # evaluation is untouched
    assert outdoor.info["train_scene"] == "outdoor"
    with pytest.raises(ConfigError, match="train_scene must be one of 'all', 'indoor', 'outdoor', got 'night'"):
        load_dataset("sysu", root, train_scene="night")


def test_sysu_split_files_tolerate_whitespace_trailing_commas_and_ignore_mat(tmp_path):
    root = make_sysu(tmp_path / "SYSU")
    (root / "exp" / "train_id.txt").write_text(" 1 , 2 ,\n999,998\n")  # only the first line counts
    (root / "exp" / "val_id.txt").write_text("3,,\n")
    (root / "exp" / "rand_perm_cam.mat").write_bytes(b"\x00\x01")
    ds = load_dataset("sysu", root)
    assert ds.info["split_ids"]["train"] == [1, 2] and ds.info["split_ids"]["val"] == [3]


def test_sysu_parses_path_components_even_if_root_contains_cam(tmp_path):
    root = make_sysu(tmp_path / "cam3_data" / "cam6", train=(1,), val=(), test=(2,))
    (root / "exp" / "val_id.txt").write_text("\n")
    with pytest.raises(DatasetError, match="val_id.txt is empty"):
        load_dataset("sysu", root)
    (root / "exp" / "val_id.txt").write_text("3\n")
    make_sysu(root, train=(1,), val=(3,), test=(2,))
    ds = load_dataset("sysu", root)
    assert [(s.pid, s.camid) for s in ds.test][:3] == [(2, 1), (2, 1), (2, 2)]
    with open(ds.train[0].path, "rb") as f:  # paths open directly
        assert f.read(2) == b"\xff\xd8"


def test_sysu_partial_cameras(tmp_path):
    root = make_sysu(tmp_path / "S", test=(4, 5), cams={5: (3, 4, 6)})
    ds = load_dataset("sysu", root)
    assert sorted({s.camid for s in ds.test if s.pid == 5}) == [3, 4, 6]
    assert len([s for s in ds.test if s.pid == 5]) == 6


def test_sysu_options_are_validated(tmp_path):
    root = make_sysu(tmp_path / "S")
    with pytest.raises(ConfigError, match=r"unknown option\(s\) 'trial'.*valid options: 'train_scene', 'train_split'"):
        load_dataset("sysu", root, trial=1)
    with pytest.raises(ConfigError, match="train_split must be one of 'train\\+val', 'train', got 'all'"):
        load_dataset("sysu", root, train_split="all")


def test_synthetic_flag_from_manifest(tmp_path):
    root = make_sysu(tmp_path / "S")
    (root / "manifest.json").write_text(json.dumps({"generator": "SynthVI", "version": 1}))
    ds = load_dataset("sysu", root)
    assert ds.info["synthetic"] is True and ds.info["manifest"]["version"] == 1


# ---------------------------------------------------------------- RegDB


def test_regdb_counts_pids_from_folders_not_labels(tmp_path):
    ds = load_dataset("regdb", make_regdb(tmp_path / "RegDB", train=(10, 20, 30), test=(40, 50)))
    assert ds.label_map == {10: 0, 20: 1, 30: 2}
    # idx test labels are 0,1 (re-indexed); pids must still be the folder numbers
    assert {s.pid for s in ds.test} == {40, 50}
    assert len(by_mod(ds.train, V)) == 6 and len(by_mod(ds.train, IR)) == 6
    assert len(by_mod(ds.test, V)) == 4 and len(by_mod(ds.test, IR)) == 4
    assert {s.camid for s in by_mod(ds.train, V)} == {1} and {s.camid for s in by_mod(ds.train, IR)} == {2}
    assert ds.info["trial"] == 1 and ds.info["idx_labels"]["test"] == {40: 0, 50: 1}
    assert ds.train[0].path.endswith("Visible/10/male_front_v_00001_10.bmp")


def test_regdb_trial_option(tmp_path):
    root = make_regdb(tmp_path / "R", train=(1, 2), test=(3,), trial=4)
    assert load_dataset("regdb", root, trial=4).info["trial"] == 4
    assert load_dataset("regdb", root, trial="4").info["split_ids"] == {"train": [1, 2], "test": [3]}
    with pytest.raises(ConfigError, match="trial must be 1..10.*got 11"):
        load_dataset("regdb", root, trial=11)
    with pytest.raises(DatasetError, match=r"idx/train_visible_1\.txt is missing"):
        load_dataset("regdb", root)


def test_regdb_inconsistent_labels_name_the_line(tmp_path):
    root = make_regdb(tmp_path / "R", train=(1, 2), test=(3,))
    thermal = root / "idx" / "train_thermal_1.txt"
    lines = thermal.read_text().splitlines()
    lines[0] = lines[0].rsplit(" ", 1)[0] + " 1"  # person 1 labelled 1 here, 0 in the visible file
    thermal.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError) as err:
        load_dataset("regdb", root)
    assert f"{thermal}:1: person 1 has label 1 but label 0" in str(err.value)


# ---------------------------------------------------------------- LLCM


def test_llcm_counts_and_cameras(tmp_path):
    ds = load_dataset("llcm", make_llcm(tmp_path / "LLCM"))
    assert ds.label_map == {1: 0, 2: 1, 3: 2}
    assert len(by_mod(ds.train, V)) == 3 * 3 * 2 and len(by_mod(ds.train, IR)) == 3 * 3 * 2
    assert {s.camid for s in by_mod(ds.train, IR)} == {1, 2, 4}
    assert len(by_mod(ds.test, V)) == 2 * 3 * 2 and len(by_mod(ds.test, IR)) == 2 * 3 * 2
    assert ds.info["rgb_cams"] == [1, 2, 3] and ds.info["ir_cams"] == [1, 2, 4]  # no nir cam3
    assert ds.info["split_ids"] == {"train": [1, 2, 3], "test": [4, 5]}


def test_llcm_pid_from_name_prefix_and_camera_from_folder(tmp_path):
    root = make_llcm(tmp_path / "LLCM", train=(1,), test=(4,))
    extra = {"vis": "vis/cam7/0009_c07_s1_f1_vis.jpg", "nir": "nir/cam7/0009/x.jpg"}
    for key, rel in extra.items():
        write_image(root / rel)
        with open(root / "idx" / f"train_{key}.txt", "a") as f:
            f.write(f"{rel} 1\n")
    ds = load_dataset("llcm", root)
    nine = [(s.pid, s.camid, s.modality) for s in ds.train if s.pid == 9]
    assert sorted(nine, key=lambda t: t[2].value) == [(9, 7, IR), (9, 7, V)]
    assert ds.label_map == {1: 0, 9: 1}


def test_llcm_has_no_options(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown option\(s\) 'trial'; valid options: none"):
        load_dataset("llcm", make_llcm(tmp_path / "L"), trial=1)


# ---------------------------------------------------------------- folder


def test_folder_reader_all_ids_train_and_test(tmp_path):
    ds = load_dataset("folder", make_folder(tmp_path / "mine"))
    assert ds.label_map == {1: 0, 2: 1, 3: 2}
    assert len(ds.train) == 3 * 3 * 2 and ds.test == ds.train
    assert ds.info["rgb_cams"] == [1, 2] and ds.info["ir_cams"] == [3]


def test_folder_reader_aliases_and_splits_json(tmp_path):
    root = make_folder(tmp_path / "mine", ids=(1, 2, 3, 4), layout={"rgb": ("c1",), "Thermal": ("cam2",)})
    (root / "splits.json").write_text(json.dumps({"train": [1, 2], "test": [3, 4]}))
    ds = load_dataset("folder", root)
    assert ds.label_map == {1: 0, 2: 1}
    assert {s.pid for s in ds.test} == {3, 4} and len(ds.test) == 2 * 2 * 2
    assert {(s.camid, s.modality) for s in ds.train} == {(1, V), (2, IR)}
    (root / "splits.json").write_text(json.dumps({"train": [1, 2, 9], "test": [2, 3]}))
    with pytest.raises(DatasetError) as err:
        load_dataset("folder", root)
    assert "'train' lists ids with no images" in str(err.value) and "9" in str(err.value)
    assert "'train' and 'test' share ids 2" in str(err.value)


# ---------------------------------------------------------------- images


def test_load_rgb_converts_grey_and_16_bit_to_rgb(tmp_path):
    grey = write_image(tmp_path / "g.bmp", fmt="BMP", mode="L")
    img = load_rgb(grey)
    assert img.mode == "RGB" and img.size == (8, 16)
    arr = np.asarray(img)
    assert (arr[..., 0] == arr[..., 2]).all()
    deep = tmp_path / "t.png"
    Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16)).save(deep)
    assert np.asarray(load_rgb(deep)).max() == 255 and load_rgb(deep).mode == "RGB"
    assert IMAGE_EXTENSIONS == (".jpg", ".jpeg", ".png", ".bmp")


def test_load_rgb_errors_name_the_path(tmp_path):
    ok = write_image(tmp_path / "ok.jpg")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(ok.read_bytes()[: len(ok.read_bytes()) // 2])
    text = tmp_path / "text.jpg"
    text.write_text("not a jpeg")
    with pytest.raises(DatasetError, match=f"{empty}.*empty"):
        load_rgb(empty)
    with pytest.raises(DatasetError, match=f"{truncated}.*cannot be decoded"):
        load_rgb(truncated)
    with pytest.raises(DatasetError, match=f"{text}.*cannot be decoded"):
        load_rgb(text)
    with pytest.raises(DatasetError, match=f"{tmp_path / 'missing.jpg'}"):
        load_rgb(tmp_path / "missing.jpg")
