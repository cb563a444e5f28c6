"""Bad dataset layouts: every error names the offending path, the expectation and what was found."""

from __future__ import annotations

import shutil

import pytest

from tests.test_datasets_layouts import make_folder, make_llcm, make_regdb, make_sysu, write_image
from vireid.core import DatasetError  # noqa: E402
from vireid.data.datasets import load_dataset  # noqa: E402
from vireid.registry import DATASETS  # noqa: E402


def problems_of(name, root, **options) -> list[str]:
    with pytest.raises(DatasetError) as err:
        load_dataset(name, root, **options)
    return getattr(err.value, "problems", [str(err.value)])


@pytest.mark.parametrize("name", DATASETS.names())
def test_missing_root_names_the_path(tmp_path, name):
    missing = tmp_path / "nowhere" / name
    (problem,) = problems_of(name, missing)
    assert f"dataset root {missing} does not exist" in problem


def test_sysu_missing_test_split_file(tmp_path):
    root = make_sysu(tmp_path / "S")
    (root / "exp" / "test_id.txt").unlink()
    (problem,) = problems_of("sysu", root)
    assert f"split file {root / 'exp' / 'test_id.txt'} is missing" in problem


def test_sysu_missing_exp_folder(tmp_path):
    root = make_sysu(tmp_path / "S")
    shutil.rmtree(root / "exp")
    (problem,) = problems_of("sysu", root)
    assert f"folder {root / 'exp'} is missing" in problem


def test_regdb_missing_idx_file(tmp_path):
    root = make_regdb(tmp_path / "R")
    (root / "idx" / "test_thermal_1.txt").unlink()
    (problem,) = problems_of("regdb", root)
    assert f"index file {root / 'idx' / 'test_thermal_1.txt'} is missing" in problem


@pytest.mark.parametrize("rel", ["idx/train_nir.txt", "idx/test_id.txt"])
def test_llcm_missing_idx_file(tmp_path, rel):
    root = make_llcm(tmp_path / "L")
    (root / rel).unlink()
    problems = problems_of("llcm", root)
    assert any(str(root / rel) in p and "is missing" in p for p in problems), problems


def test_sysu_split_id_without_images(tmp_path):
    root = make_sysu(tmp_path / "S")
    (root / "exp" / "test_id.txt").write_text("4,5,77\n")
    (problem,) = problems_of("sysu", root)
    assert f"person 77 is listed in {root / 'exp' / 'test_id.txt'} but has no images in any camera" in problem
    assert f"{root}/cam1..cam6/0077/" in problem


def test_sysu_empty_id_folders_count_as_no_images(tmp_path):
    root = make_sysu(tmp_path / "S")
    for cam in range(1, 7):
        for img in (root / f"cam{cam}" / "0005").iterdir():
            img.unlink()
    (problem,) = problems_of("sysu", root)
    assert "person 5 is listed in" in problem and "test_id.txt" in problem


def test_llcm_test_id_without_images(tmp_path):
    root = make_llcm(tmp_path / "L")
    (root / "idx" / "test_id.txt").write_text("4,5,6")
    (problem,) = problems_of("llcm", root)
    assert f"person 6 is listed in {root / 'idx' / 'test_id.txt'} but has no images" in problem


def test_sysu_person_in_one_modality(tmp_path):
    root = make_sysu(tmp_path / "S", cams={2: (1, 2, 4, 5)})  # training person 2 without IR
    (problem,) = problems_of("sysu", root)
    assert "person 2 has visible images but no infrared images" in problem
    assert f"SYSU-MM01 training split (train+val) at {root}" in problem


def test_regdb_person_in_one_modality(tmp_path):
    root = make_regdb(tmp_path / "R", train=(1, 2), test=(3,))
    thermal = root / "idx" / "train_thermal_1.txt"
    thermal.write_text("".join(line + "\n" for line in thermal.read_text().splitlines() if "/2/" not in line))
    (problem,) = problems_of("regdb", root)
    assert "person 2 has visible images but no infrared images" in problem and str(root) in problem


def test_folder_person_in_one_modality(tmp_path):
    root = make_folder(tmp_path / "F", ids=(1, 2))
    write_image(root / "infrared" / "3" / "7" / "a.jpg")
    (problem,) = problems_of("folder", root)
    assert "person 7 has infrared images but no visible images" in problem and str(root) in problem


def test_sysu_unexpected_camera_folder(tmp_path):
    root = make_sysu(tmp_path / "S")
    write_image(root / "cam7" / "0001" / "0001.jpg")
    (problem,) = problems_of("sysu", root)
    assert f"unexpected camera folder {root / 'cam7'}" in problem and "cam1..cam6" in problem


def test_sysu_missing_camera_folder(tmp_path):
    root = make_sysu(tmp_path / "S")
    shutil.rmtree(root / "cam5")
    (problem,) = problems_of("sysu", root)
    assert f"camera folder {root / 'cam5'} is missing" in problem


def test_llcm_unexpected_camera_folder(tmp_path):
    root = make_llcm(tmp_path / "L")
    write_image(root / "test_vis" / "cam10" / "0004" / "a.jpg")
    (problem,) = problems_of("llcm", root)
    assert f"unexpected camera folder {root / 'test_vis' / 'cam10'}" in problem


def test_llcm_missing_training_image(tmp_path):
    root = make_llcm(tmp_path / "L")
    gone = root / "vis" / "0002" / "0002_c01_s100_f0_vis.jpg"
    gone.unlink()
    (problem,) = problems_of("llcm", root)
    assert f"image {gone} does not exist" in problem and "idx/train_vis.txt:" in problem


def test_non_image_file_is_ignored_with_a_warning(tmp_path):
    root = make_sysu(tmp_path / "S")
    junk = root / "cam3" / "0001" / "notes.txt"
    junk.write_text("hello")
    with pytest.warns(UserWarning, match=f"ignoring non-image file {junk}"):
        ds = load_dataset("sysu", root)
    assert all(not s.path.endswith(".txt") for s in ds.train)
    assert len(ds.train) == 36


def test_all_layout_problems_are_reported_together(tmp_path):
    root = make_sysu(tmp_path / "S")
    write_image(root / "cam8" / "0001" / "0001.jpg")
    (root / "exp" / "val_id.txt").write_text("3,x\n")
    (root / "exp" / "test_id.txt").write_text("4,5,2\n")
    problems = problems_of("sysu", root)
    assert len(problems) == 3, problems
    assert any(f"{root / 'cam8'}" in p for p in problems)
    assert any("val_id.txt: expected comma-separated integer ids, found 'x'" in p for p in problems)
    assert any("train_id.txt and" in p and "share 1 ids (2)" in p for p in problems)
