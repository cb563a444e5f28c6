"""`vireid data check`: counts, SYSU protocol sizes, problems with paths, --decode, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_datasets_layouts import make_llcm, make_regdb, make_sysu, write_image
from vireid.cli import main  # noqa: E402
from vireid.core import Modality, Sample  # noqa: E402
from vireid.data.check import check_dataset  # noqa: E402
from vireid.protocols.sysu import expected_sizes as sysu_protocol_sizes  # noqa: E402


def sysu_mixed(root: Path) -> Path:
    """Test ids 4 (all cams, 12 images in cam1), 5 (cams 3,4,6), 6 (cams 2,3,6)."""
    make_sysu(root, test=(4, 5, 6), cams={5: (3, 4, 6), 6: (2, 3, 6)})
    for i in range(3, 13):
        write_image(root / "cam1" / "0004" / f"{i:04d}.jpg")
    return root


EXPECTED_MIXED = {
    "query": 12, "query_cam3": 6, "query_cam6": 6,
    "gallery_single_all": 6, "gallery_single_indoor": 3,
    "gallery_multi_all": 10 + 2 * 5, "gallery_multi_indoor": 10 + 2 + 2,
    # cam3: id 4 (has cam1) and 5 (has cam4) valid, 6 (cam2 only) not; cam6: all three have RGB
    "valid_queries_all": 4 + 6,
    # indoor: cam3 needs cam1 (id 4 only); cam6 needs cam1 or cam2 (ids 4 and 6)
    "valid_queries_indoor": 2 + 4,
}


def test_sysu_protocol_sizes_hand_counted():
    s = lambda pid, cam, n: [Sample(f"{pid}/{cam}/{i}", pid, cam, Modality.INFRARED if cam in (3, 6)  # noqa: E731
                                    else Modality.VISIBLE) for i in range(n)]
    test = s(1, 1, 13) + s(1, 3, 5) + s(2, 2, 4) + s(2, 3, 3) + s(2, 6, 2) + s(3, 5, 1) + s(3, 6, 7)
    assert sysu_protocol_sizes(test) == {
        "query": 17, "query_cam3": 8, "query_cam6": 9,
        "gallery_single_all": 3, "gallery_single_indoor": 2,
        "gallery_multi_all": 10 + 4 + 1, "gallery_multi_indoor": 10 + 4,
        "valid_queries_all": 5 + 9,  # id 2's cam3 queries only see cam2 -> invalid
        "valid_queries_indoor": 5 + 2,  # id 3 has no indoor RGB; id 2's cam6 sees cam2
    }


def test_check_sysu_counts_and_protocol(tmp_path):
    report = check_dataset("sysu", sysu_mixed(tmp_path / "S"), progress=False)
    assert report.ok and report.problems == []
    assert report.protocol == EXPECTED_MIXED
    train = report.counts["train"]
    assert (train["ids"], train["visible"]["images"], train["infrared"]["images"]) == (3, 24, 12)
    assert train["infrared"]["cams"] == {3: {"ids": 3, "images": 6}, 6: {"ids": 3, "images": 6}}
    assert report.counts["test"]["visible"]["cams"][1] == {"ids": 1, "images": 12}
    assert report.counts["val"]["images"] == 0
    text = report.format()
    assert text.splitlines()[-1] == "OK"
    assert "train  visible   cam1         3        6" in text
    assert "query (IR cams 3+6): 12 (6 / 6)" in text and "valid queries: all-search 10, indoor 6" in text
    assert any("exactly cam1..cam6" in c for c in report.checks)
    # a tiny fake is not the official SYSU-MM01 (TV-11: docs/reference/protocols.md#tv-11)
    assert any("TV-11" in w for w in report.warnings)


def test_check_reports_layout_problems_one_line_each(tmp_path):
    root = make_sysu(tmp_path / "S")
    write_image(root / "cam7" / "0001" / "0001.jpg")
    (root / "exp" / "test_id.txt").unlink()
    report = check_dataset("sysu", root)
    assert not report.ok and len(report.problems) == 2
    assert all("\n" not in p for p in report.problems)
    assert any(str(root / "cam7") in p for p in report.problems)
    assert any(str(root / "exp" / "test_id.txt") in p for p in report.problems)
    assert report.format().splitlines()[-2:] == report.problems


def test_check_decode_lists_broken_images(tmp_path):
    root = make_sysu(tmp_path / "S")
    empty = root / "cam2" / "0004" / "0002.jpg"
    empty.write_bytes(b"")
    cut = root / "cam6" / "0001" / "0001.jpg"
    cut.write_bytes(cut.read_bytes()[:120])
    # without --decode nothing is decoded, but a stat still finds the empty file (issue 13); the cut one needs decoding
    fast = check_dataset("sysu", root, progress=False)
    assert len(fast.problems) == 1 and str(empty) in fast.problems[0] and "empty (0 bytes)" in fast.problems[0]
    report = check_dataset("sysu", root, decode=True, progress=False, workers=2)
    assert not report.ok and len(report.problems) == 2
    assert any(str(empty) in p and "empty (0 bytes)" in p for p in report.problems)
    assert any(str(cut) in p and "cannot be decoded" in p for p in report.problems)
    assert "decoded 60 images as RGB: 58 ok, 2 failed" in report.checks


def test_check_manifest_mismatch_is_a_problem(tmp_path):
    root = make_regdb(tmp_path / "R")  # persons 1..3 train, 4..5 test; 2 images per modality each
    cams = {"visible": {"modality": "visible", "identities": 5, "images": 10},
            "thermal": {"modality": "infrared", "identities": 5, "images": 99}}
    counts = {"splits": {"all": {"identities": 5, "images": 20, "cameras": cams}},
              "trials": {"1": {"train_identities": 3, "test_identities": 2}}}
    (root / "manifest.json").write_text(json.dumps({"generator": "SynthVI", "counts": counts}))
    report = check_dataset("regdb", root)
    assert report.synthetic
    (problem,) = report.problems
    assert problem.startswith(f"{root / 'manifest.json'}: manifest records train+test.infrared.cam2.images = 99, "
                              "the reader found 10")
    assert "counts match manifest.json (8 values compared, 1 differ)" in report.checks


def test_check_non_image_file_is_a_warning_not_a_failure(tmp_path):
    root = make_llcm(tmp_path / "L")
    junk = root / "test_nir" / "cam1" / "0004" / "Thumbs.db"
    junk.write_bytes(b"x")
    report = check_dataset("llcm", root)
    assert report.ok and any(str(junk) in w for w in report.warnings)


def test_cli_exit_codes(tmp_path, capsys):
    root = make_regdb(tmp_path / "R", trial=2)
    assert main(["data", "check", "regdb", str(root), "--option", "trial=2"]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith("OK") and "trial=2" in out
    assert main(["data", "check", "regdb", str(root)]) == 1  # trial 1 files are absent
    out = capsys.readouterr().out
    assert f"index file {root / 'idx' / 'train_visible_1.txt'} is missing" in out
    assert main(["data", "check", "regdb", str(root), "-o", "split=2"]) == 2
    assert "unknown option(s) 'split'; valid options: 'trial'" in capsys.readouterr().err
    assert main(["data", "check", "regdb", str(root), "-o", "trial"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_cli_module_does_not_import_torch():
    code = "import sys, vireid.data.cli, vireid.cli; vireid.cli.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def _generate():
    synthetic = pytest.importorskip("vireid.data.synthetic")
    generate = getattr(synthetic, "generate", None)
    if generate is None:
        pytest.skip("vireid.data.synthetic.generate is not available yet")
    return generate


@pytest.mark.parametrize("layout", ["sysu", "regdb", "llcm"])
def test_synthetic_layouts_match_their_manifest(tmp_path, layout):
    generate = _generate()
    out = tmp_path / layout
    generate(layout, out, ids=12, images_per_camera=2, size=(16, 8), difficulty=0.1, seed=0, force=True,
             workers=1, progress=False)
    report = check_dataset(layout, out, progress=False)
    assert report.ok, report.format()
    assert report.synthetic
    assert any(c.startswith("counts match manifest.json") and "0 differ" in c for c in report.checks), report.checks
    # A file lost after generation is a mismatch with the manifest (the reader itself still works).
    from vireid.data.datasets import load_dataset

    victim = Path(load_dataset(layout, out).test[0].path)
    if layout == "regdb":  # RegDB reads its idx lists; drop the line too so only the count differs
        idx = out / "idx" / "test_visible_1.txt"
        rel = victim.relative_to(out).as_posix()
        idx.write_text("".join(line + "\n" for line in idx.read_text().splitlines() if not line.startswith(rel + " ")))
    victim.unlink()
    report = check_dataset(layout, out, progress=False)
    assert not report.ok
    assert any("manifest.json: manifest records" in p and "images" in p for p in report.problems), report.problems
