"""Packaging: the package list in pyproject.toml is complete, and `vireid demo` runs from an installed wheel in
another directory (its preset is package data, not a file of the source tree)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = None

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(tomllib is None, reason="tomllib is in the standard library from Python 3.11")
def test_every_package_under_src_is_listed_in_pyproject():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO / "src").parts) for p in (REPO / "src").rglob("__init__.py")}
    configs = {"vireid.configs"} | {f"vireid.configs.{d.name}" for d in (REPO / "configs").iterdir() if d.is_dir()
                                    and d.name != "__pycache__"}
    assert listed == found | configs | {"vireid.serve.static"}


def test_shipped_configs_resolve_from_any_directory(tmp_path, monkeypatch):
    from vireid.config import load_config, resolve_config_path, shipped_configs

    monkeypatch.chdir(tmp_path)
    assert (shipped_configs() / "synthetic" / "baseline.yaml").is_file()
    assert resolve_config_path("configs/synthetic/baseline.yaml") == shipped_configs() / "synthetic" / "baseline.yaml"
    assert load_config("configs/synthetic/baseline.yaml").method.name == "baseline"
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "mine.yaml").write_text("train: {epochs: 3}\n")
    assert load_config("configs/mine.yaml").train.epochs == 3  # a local file wins


@pytest.mark.slow
def test_demo_runs_from_an_installed_wheel_in_another_directory(tmp_path):
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(REPO)],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("vireid-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "vireid/configs/synthetic/baseline.yaml" in names and "vireid/serve/static/index.html" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)  # the installed package, without the source tree
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    where = subprocess.run([sys.executable, "-c", "import vireid, vireid.config as c; print(vireid.__file__); "
                            "print(c.shipped_configs())"], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert where.stdout.splitlines() == [str(site / "vireid" / "__init__.py"), str(site / "vireid" / "configs")]
    demo = subprocess.run([sys.executable, "-m", "vireid", "demo", "--out", "out", "--data", "data", "--epochs", "1",
                           "--ids", "40", "--no-progress"], cwd=elsewhere, env=env, capture_output=True, text=True,
                          timeout=900)
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-3000:]
    assert (elsewhere / "out" / "demo.json").is_file() and (elsewhere / "out" / "report.html").is_file()
    assert "indoor   ratio" in demo.stdout
