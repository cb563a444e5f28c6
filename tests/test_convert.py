"""vireid convert (issue 16): official AGW, CAJ, MPANet, LbA and JSIA-ReID checkpoints become ordinary vireid runs.

The official state dicts below are written from a reading of the official code (model.py of
mangye16/Cross-Modal-Re-ID-baseline, LbA's model.py, MPANet's models/baseline.py + models/resnet.py, JSIA-ReID's
core/networks.py through vireid.methods.jsia.official_state_dicts, which test_jsia.py checks against the official
names), independently of the converter's mapping code: torchvision's ResNet names stand for the official resnet.py
files, which use the same attribute names. Values are random and distinct, so "every tensor lands" is checked by
value: each vireid tensor equals exactly one official tensor, and the official tensors no vireid tensor took are
exactly the ones the official forward pass never reads.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from tests.engine_fixtures import make_tiny_sysu
from tests.helpers import REPO
from tests.test_serve_helpers import make_gallery_folder
from vireid.cli import main as cli_main
from vireid.convert import SOURCES, convert_official
from vireid.core import CheckpointError, ConfigError
from vireid.runs import RunDir, read_checkpoint

NUM_CLASSES = 4
ARCH = "resnet18"  # the official networks are ResNet-50; ResNet-18 keeps the tests fast (same names)
C = {"layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512}  # ResNet-18 channels
UNUSED_TWO_STREAM = re.compile(r"^(visible_module\.visible|thermal_module\.thermal)\.layer|^base_resnet\.base\.(conv1|"
                               r"bn1)\.")


class _Values:
    """Distinct random tensors scaled like trained ones (features stay finite): BatchNorm counters count up."""

    def __init__(self, seed: int) -> None:
        self.gen = torch.Generator().manual_seed(seed)
        self.counter = 1000

    def __call__(self, name: str, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        if dtype == torch.int64:
            self.counter += 1
            return torch.tensor(self.counter)
        noise = torch.randn(shape, generator=self.gen)
        if name.endswith("running_var"):
            return noise.abs() * 0.1 + 1.0
        if name.endswith(("running_mean", "bias")):
            return noise * 0.01
        if len(shape) == 1:  # a BatchNorm weight
            return noise * 0.01 + 1.0
        fan_in = int(torch.tensor(shape[1:]).prod()) if len(shape) > 1 else 1
        return noise * (1.0 / fan_in) ** 0.5


@functools.lru_cache(maxsize=1)
def _resnet_shapes() -> tuple[tuple[str, tuple[int, ...], torch.dtype], ...]:
    ref = torchvision.models.resnet18(weights=None).state_dict()
    return tuple((k, tuple(v.shape), v.dtype) for k, v in ref.items() if not k.startswith("fc."))


def _resnet(values: _Values, prefix: str) -> dict[str, torch.Tensor]:
    """The official resnet.py's tensors (torchvision's names, no fc) under `prefix`."""
    return {prefix + k: values(k, shape, dtype) for k, shape, dtype in _resnet_shapes()}


def _bn(values: _Values, prefix: str, dim: int) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": values(k, (dim,)) for k in ("weight", "bias", "running_mean", "running_var")} | {
        f"{prefix}.num_batches_tracked": values("num_batches_tracked", (), torch.int64)}


def official_agw(seed: int = 0, non_local: bool = True, width=lambda c: 1, classes: int = NUM_CLASSES) -> dict:
    """embed_net(class_num, no_local='on', gm_pool='on') of the AGW / CAJ model.py (the LbA network without NL)."""
    v = _Values(seed)
    sd = {}
    for prefix in ("visible_module.visible.", "thermal_module.thermal.", "base_resnet.base."):
        sd.update(_resnet(v, prefix))
    if non_local:  # NL_2: 2 blocks (the last two of layer2), NL_3: 3 in ResNet-50, here both of layer2's / layer3's
        for i, stage in ((2, "layer2"), (3, "layer3")):
            ch = C[stage]
            w = width(ch)
            for j in range(2):
                p = f"NL_{i}.{j}"
                shapes = {"g.0.weight": (w, ch, 1, 1), "g.0.bias": (w,), "theta.weight": (w, ch, 1, 1),
                          "theta.bias": (w,), "phi.weight": (w, ch, 1, 1), "phi.bias": (w,),
                          "W.0.weight": (ch, w, 1, 1), "W.0.bias": (ch,)}
                sd.update({f"{p}.{k}": v(k, shape) for k, shape in shapes.items()})
                sd.update(_bn(v, f"{p}.W.1", ch))
    sd.update(_bn(v, "bottleneck", 512))
    sd["classifier.weight"] = v("weight", (classes, 512))
    return sd


def official_lba(seed: int = 0) -> dict:
    """LbA's embed_net: the AGW two-stream network without non-local blocks (CMAlign and GeMP have no tensors)."""
    return official_agw(seed, non_local=False)


def official_mpanet(seed: int = 0, classes: int = NUM_CLASSES) -> dict:
    """Baseline(pattern_attention=True, modality_attention=2, mutual_learning=True, classification=True)."""
    v = _Values(seed)
    sd = _resnet(v, "backbone.")
    for i, stage in ((3, "layer3"), (4, "layer4")):  # MAM(dim, r=16): 1x1 convs without bias
        ch = C[stage]
        sd[f"backbone.MAM{i}.channel_attention.0.weight"] = v("weight", (ch // 16, ch, 1, 1))
        sd[f"backbone.MAM{i}.channel_attention.2.weight"] = v("weight", (ch, ch // 16, 1, 1))
    sd["spatial_attention.weight"] = v("weight", (6, 512, 1, 1))
    sd["spatial_attention.bias"] = v("bias", (6,))
    dim = 512 * 7  # base_dim + dim * part_num
    for name in ("visible_classifier", "infrared_classifier", "visible_classifier_", "infrared_classifier_",
                 "classifier"):
        sd[f"{name}.weight"] = v("weight", (classes, dim))
    sd.update(_bn(v, "bn_neck", dim))
    return sd


def _preset(source: str, *overrides: str):
    """The SYSU preset a converted run of `source` starts from, with a ResNet-18 and no download."""
    from vireid.config import load_config, shipped_configs

    src = SOURCES[source]
    return load_config(shipped_configs() / "sysu" / f"{src.preset_sysu}.yaml",
                       ["model.pretrained=none", f"model.arch={ARCH}", *overrides])


def _sizes(source: str) -> list[str]:
    """The smallest input sizes (>= 32x16) the source's network takes."""
    from vireid.registry import METHODS

    low = METHODS.get(SOURCES[source].method).min_input_size(_preset(source))
    return [f"data.height={max(32, low[0])}", f"data.width={max(16, low[1])}"]


def _jsia_method(seed: int):
    """vireid's JSIA-ReID at the official code's settings (the SYSU preset), ResNet-18."""
    from vireid.methods import build_method

    torch.manual_seed(seed)
    return build_method(_preset("jsia", *_sizes("jsia")), NUM_CLASSES)


def official_jsia(seed: int = 0) -> list[dict]:
    """The four DataParallel state dicts model-0..3_<epoch>.pkl (generator_rgb with the shared encoder, generator_ir
    with a second copy of it, discriminator_rgb, discriminator_ir)."""
    from vireid.methods.jsia import official_state_dicts

    dicts = official_state_dicts(_jsia_method(seed))
    v = _Values(seed + 100)  # distinct values for every tensor
    for d in dicts:
        for k, t in d.items():
            d[k] = v(k, tuple(t.shape), t.dtype)
    encoder = {k: t for k, t in dicts[0].items() if k.startswith("module.mod_invar_enc.")}
    dicts[1].update(encoder)  # both generator files hold the one shared encoder
    return dicts


def _metrics() -> dict:
    """What the AGW / CAJ / LbA scripts save beside 'net': NumPy metrics of the last test."""
    return {"cmc": (np.arange(20, dtype=np.float32) + 50) / 100, "mAP": np.float64(0.4765), "mINP": np.float64(0.353),
            "epoch": 80}


def write_official(source: str, folder: Path, *, prefixed: bool = True, seed: int = 0, state: dict | None = None,
                   states: list[dict] | dict | None = None) -> tuple[Path, list[dict]]:
    """Save an official-format checkpoint of `source` into `folder` (`state` / `states`: these tensors, unprefixed);
    (what to convert, the unprefixed dicts)."""
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(states, dict):
        state = states

    def named(d: dict) -> dict:
        return {("module." + k if prefixed else k): t for k, t in d.items()}

    if source == "jsia":
        if isinstance(states, list):
            plain = states
        else:
            plain = [{k[len("module."):]: t for k, t in d.items()} for d in official_jsia(seed)]
        for i, d in enumerate(plain):
            torch.save(named(d), folder / f"model-{i}_649.pkl")
        return folder, plain
    sd = state if state is not None else {"agw": official_agw, "caj": official_agw, "lba": official_lba,
                                          "mpanet": official_mpanet}[source](seed)
    if source == "mpanet":  # ignite's ModelCheckpoint(save_as_state_dict=True): the bare state dict
        path = folder / "SYSU_model_140.pth"
        torch.save(named(sd), path)
    else:  # torch.save({'net': net.state_dict(), 'cmc': ..., 'mAP': ..., 'mINP': ..., 'epoch': ...}, '*_best.t')
        path = folder / f"sysu_{source}_p4_n8_lr_0.1_seed_0_best.t"
        torch.save({"net": named(sd), **_metrics()}, path)
    return path, [sd]


def _tiny(source: str, data_root: Path) -> list[str]:
    """Overrides for a seconds-long evaluation on the tiny SYSU-layout set."""
    return [*_sizes(source), f"data.root={data_root}", "data.num_workers=0", "train.device=cpu",
            "eval.options={mode: all, shots: 1, gallery_sampler: agw, trials: 1}", "eval.batch_size=16"]


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("convert")
    return {"base": base, "sysu": make_tiny_sysu(base / "sysu"), "gallery": make_gallery_folder(base / "gallery")}


@pytest.fixture(scope="module")
def officials(world):
    """Official-format files of every source, written once: (source, prefixed) -> (what to convert, the dicts).
    CAJ saves what AGW saves (the same network and container), so it shares AGW's files."""
    out = {}
    for source in ("agw", "lba", "mpanet", "jsia"):
        ck, dicts = write_official(source, world["base"] / f"official-{source}-module", prefixed=True)
        out[source, True] = ck, dicts
        state = dicts if source == "jsia" else dicts[0]  # the same tensors, saved without the prefix
        out[source, False] = write_official(source, world["base"] / f"official-{source}-plain", prefixed=False,
                                            states=state)
    for prefixed in (True, False):
        out["caj", prefixed] = out["agw", prefixed]
    return out


@pytest.fixture(scope="module")
def tiny_runs(world, officials):
    """One converted run per source from a DataParallel-prefixed official checkpoint, set up for the tiny data."""
    runs = {}
    for source in SOURCES:
        ck, dicts = officials[source, True]
        result = convert_official(source, ck, world["base"] / f"run-{source}", overrides=_tiny(source, world["sysu"]))
        runs[source] = (result, ck, dicts)
    return runs


@pytest.fixture(scope="module")
def plain_runs(world, officials):
    """One converted run per source from an unprefixed checkpoint, with every default (the official settings)."""
    runs = {}
    for source in SOURCES:
        ck, dicts = officials[source, False]
        runs[source] = (convert_official(source, ck, world["base"] / f"plain-run-{source}"), ck, dicts)
    return runs


# ---------------------------------------------------------------------------------------------- round trip


def _digest(t: torch.Tensor) -> tuple:
    """Identifies a tensor among distinct random ones (cheaper than hashing every byte of 100 MB files)."""
    flat = t.detach().reshape(-1)
    return str(t.dtype), tuple(t.shape), float(flat.double().sum()), tuple(flat[:3].tolist()), tuple(flat[-3:].tolist())


# Hand-picked correspondences (vireid name, official name), from the official modules' attribute names.
SPOT = {
    "agw": [("backbone.stem.visible.conv1.weight", "visible_module.visible.conv1.weight"),
            ("backbone.stem.infrared.bn1.running_var", "thermal_module.thermal.bn1.running_var"),
            ("backbone.layer2.blocks.0.downsample.0.weight", "base_resnet.base.layer2.0.downsample.0.weight"),
            ("backbone.layer2.non_local.0.g.weight", "NL_2.0.g.0.weight"),
            ("backbone.layer3.non_local.1.W.1.running_mean", "NL_3.1.W.1.running_mean"),
            ("neck.bn.weight", "bottleneck.weight"), ("classifier.fc.weight", "classifier.weight")],
    "lba": [("backbone.stem.infrared.conv1.weight", "thermal_module.thermal.conv1.weight"),
            ("backbone.layer4.blocks.1.bn2.bias", "base_resnet.base.layer4.1.bn2.bias"),
            ("neck.bn.running_mean", "bottleneck.running_mean"), ("classifier.fc.weight", "classifier.weight")],
    "mpanet": [("backbone.stem.conv1.weight", "backbone.conv1.weight"),
               ("backbone.layer3.blocks.1.conv2.weight", "backbone.layer3.1.conv2.weight"),
               ("mam.layer3.channel_attention.0.weight", "backbone.MAM3.channel_attention.0.weight"),
               ("mam.layer4.channel_attention.2.weight", "backbone.MAM4.channel_attention.2.weight"),
               ("pam.spatial_attention.bias", "spatial_attention.bias"), ("neck.bn.running_var", "bn_neck.running_var"),
               ("classifier.fc.weight", "classifier.weight"), ("classifier_v.fc.weight", "visible_classifier.weight"),
               ("classifier_r.fc.weight", "infrared_classifier.weight"),
               ("mean_weight_v", "visible_classifier_.weight"), ("mean_weight_r", "infrared_classifier_.weight")],
    "jsia": [("backbone.stem.conv1.weight", "mod_invar_enc.resnet_conv1.0.weight"),
             ("backbone.layer1.blocks.0.conv1.weight", "mod_invar_enc.resnet_conv1.3.0.conv1.weight"),
             ("backbone.layer4.blocks.1.bn2.weight", "mod_invar_enc.resnet_conv2.2.1.bn2.weight"),
             ("neck.bn.weight", "mod_invar_enc.classifier.bn.weight"),
             ("classifier.fc.weight", "mod_invar_enc.classifier.classifier.weight")],
}
SPOT["caj"] = SPOT["agw"]


def _check_landed(result, dicts: list[dict], source: str, spot: str | None = None) -> None:
    saved = read_checkpoint(RunDir(result.path).checkpoint("last"))
    assert saved["method"] == SOURCES[source].method and saved["num_classes"] == NUM_CLASSES
    model = saved["model"]
    where = {}
    for i, d in enumerate(dicts):
        for k, t in d.items():
            where.setdefault(_digest(t), []).append((i, k))
    taken = set()
    for key, t in model.items():
        hits = where.get(_digest(t))
        assert hits, f"{key} holds no official tensor"
        taken.update(hits)
    official = {(i, k) for i, d in enumerate(dicts) for k in d}
    left = official - taken
    if source == "jsia":  # the second generator file's copy of the shared encoder holds the same values
        assert not left
        assert len(model) == sum(len(d) for d in dicts) - sum(k.startswith("mod_invar_enc.") for k in dicts[1])
    elif source == "mpanet":
        assert not left  # every official tensor has its place
    else:
        assert {k for _, k in left} == {k for k in dicts[0] if UNUSED_TWO_STREAM.search(k)}
        assert sorted(result.ignored) == sorted(k for _, k in left)
    first = dicts[0]
    for mine, theirs in SPOT[spot or source]:
        assert torch.equal(model[mine], first[theirs]), (mine, theirs)


@pytest.mark.parametrize("source", list(SOURCES))
def test_every_tensor_lands_with_the_module_prefix(source, tiny_runs):
    result, _, dicts = tiny_runs[source]
    _check_landed(result, dicts, source)


@pytest.mark.parametrize("source", list(SOURCES))
def test_every_tensor_lands_without_the_module_prefix(source, plain_runs):
    result, _, dicts = plain_runs[source]
    _check_landed(result, dicts, source)


@pytest.mark.parametrize("source", list(SOURCES))
def test_env_records_the_source_files_their_hash_and_the_converter(source, tiny_runs):
    result, ck, _ = tiny_runs[source]
    env = json.loads(RunDir(result.path).env.read_text())
    conv = env["converted_from"]
    files = sorted(Path(ck).glob("model-*_649.pkl")) if source == "jsia" else [Path(ck)]
    assert [f["path"] for f in conv["files"]] == [str(p.resolve()) for p in files]
    assert [f["sha256"] for f in conv["files"]] == [hashlib.sha256(p.read_bytes()).hexdigest() for p in files]
    assert conv["source"] == source and conv["converter"].startswith("vireid.convert")
    assert env["vireid"] and "git_revision" in env and (RunDir(result.path).config.is_file())
    if source in ("agw", "caj", "lba"):  # the NumPy metrics beside the weights, read as plain numbers
        assert conv["official_metadata"]["mAP"] == pytest.approx(0.4765)
        assert conv["official_metadata"]["epoch"] == 80 and conv["official_metadata"]["cmc"][0] == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------------- the run works


REPORTED = {"agw": "bn", "caj": "bn", "mpanet": "bn", "lba": "pool", "jsia": "bn"}


@pytest.mark.parametrize("source", list(SOURCES))
def test_the_converted_run_evaluates_exports_and_builds_an_index(source, tiny_runs, world, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from vireid.serve.index import GalleryIndex

    result, _, _ = tiny_runs[source]
    run = str(result.path)
    assert cli_main(["eval", run]) == 0
    results = json.loads(RunDir(run).results.read_text())
    (entry,) = results["protocols"].values()
    assert list(entry["features"])[0] == REPORTED[source] and results["meta"]["flip"] is (source == "caj")
    onnx = tmp_path / "model.onnx"
    assert cli_main(["export", run, "--format", "onnx", "--out", str(onnx)]) == 0 and onnx.is_file()
    assert "max abs difference" in capsys.readouterr().out  # the ONNX graph matched PyTorch
    index = tmp_path / "index"
    assert cli_main(["index", "build", run, "--images", str(world["gallery"]), "--out", str(index),
                     "--no-progress"]) == 0
    opened = GalleryIndex.open(index)
    assert len(opened) == 12 and opened.feature == REPORTED[source]
    assert opened.model["flip"] is (source == "caj") and opened.model["method"] == SOURCES[source].method
    capsys.readouterr()


# ---------------------------------------------------------------------------------------------- test-time settings

# The official test scripts' settings, transcribed from the scripts (not from the converter): input size, reported
# feature, flip, distance, SYSU gallery draw. AGW test.py / CAJ testa.py / LbA test.py: TestData resizes to 144x288
# with PIL ANTIALIAS and normalises with ImageNet mean/std; AGW and CAJ print FC (post-BN) and POOL, LbA feat4_p_norm
# (pre-BN GeM); CAJ's testa.py averages the features of the image and its mirror and L2-normalises; all rank by the
# inner product of L2-normalised features; their SYSU galleries are random.seed(trial) draws (vireid "agw").
# MPANet: T.Resize((384, 128)) (RegDB 256x128), the BN-neck output normalised, squared Euclidean, rand_perm_cam.mat.
# JSIA-ReID core/test.py: the encoder's post-BN feature at 256x128, no flip, the official SYSU evaluation port.
OFFICIAL = {  # source: (height, width, reported feature, flip, distance, SYSU gallery sampler)
    "agw": (288, 144, "bn", False, "cosine", "agw"),
    "caj": (288, 144, "bn", True, "cosine", "agw"),
    "lba": (288, 144, "pool", False, "cosine", "agw"),
    "mpanet": (384, 128, "bn", False, "cosine", "official"),
    "jsia": (256, 128, "bn", False, "cosine", "official"),
}


def _docs_rows() -> dict[tuple[str, str], list[str]]:
    """The settings table of docs/official-weights.md: (source, dataset) -> its cells."""
    rows = {}
    for line in (REPO / "docs" / "official-weights.md").read_text().splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) >= 8 and cells[0] in SOURCES:
            rows[(cells[0], cells[1])] = cells
    return rows


@pytest.mark.parametrize("source", list(SOURCES))
def test_test_time_settings_equal_the_official_test_script_and_the_docs(source, plain_runs):
    from vireid.inference import FeatureExtractor

    height, width, feature, flip, distance, sampler = OFFICIAL[source]
    result, _, _ = plain_runs[source]
    cfg = result.config
    assert (cfg.data.height, cfg.data.width) == (height, width)
    assert cfg.eval.features[0] == feature and cfg.eval.flip is flip and cfg.eval.distance == distance
    assert cfg.eval.protocol == "sysu" and cfg.eval.options["gallery_sampler"] == sampler
    assert cfg.eval.options["mode"] == "all" and cfg.eval.options["trials"] == 10
    assert cfg.model.pretrained == "none" and cfg.model.arch == ARCH
    fx = FeatureExtractor(result.path)
    spec = fx.method.inference_spec()
    assert (fx.height, fx.width, fx.feature, fx.flip) == (height, width, feature, flip)
    assert spec.mean == pytest.approx((0.485, 0.456, 0.406)) and spec.std == pytest.approx((0.229, 0.224, 0.225))
    row = _docs_rows()[(source, "sysu")]
    assert row[2] == f"{height}×{width}" and row[3].split(",")[0].strip("` ") == feature
    assert row[4] == ("on" if flip else "off") and row[6] == distance and row[7] == sampler


def test_mpanet_on_regdb_gets_the_regdb_size(tmp_path, officials):
    ck, _ = officials["mpanet", True]
    cfg = convert_official("mpanet", ck, tmp_path / "run", dataset="regdb").config
    assert (cfg.data.height, cfg.data.width) == (256, 128)
    assert cfg.eval.protocol == "regdb" and cfg.eval.options["direction"] == "thermal_to_visible"
    assert _docs_rows()[("mpanet", "regdb")][2] == "256×128"


# ---------------------------------------------------------------------------------------------- refusals


def _refused(source: str, ck: Path, out: Path, match: str, **kwargs) -> str:
    with pytest.raises(CheckpointError, match=match) as info:
        convert_official(source, ck, out, **kwargs)
    assert not out.exists(), "a refused conversion must write nothing"
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_checkpoint_of_another_method_is_refused_naming_the_tensors(tmp_path, officials):
    (agw, _), (mpanet, _), (lba, _), (jsia, _) = (officials[s, True] for s in ("agw", "mpanet", "lba", "jsia"))
    out = tmp_path / "run"
    msg = _refused("mpanet", agw, out, r"not an official MPANet .*checkpoint: it has no backbone\.conv1\.weight")
    assert "looks like an AGW / CAJ checkpoint" in msg and "NL_2.0.g.0.weight" in msg
    msg = _refused("agw", mpanet, out, r"has no visible_module\.visible\.conv1\.weight")
    assert "bn_neck.weight" in msg and "--from mpanet" in msg
    _refused("lba", agw, out, r"not an official LbA .*checkpoint: it holds non-local blocks \(NL_2\.0\.")
    _refused("caj", lba, out, r"no non-local blocks \(NL_2\.\*, NL_3\.\*\).*--from lba")
    _refused("agw", jsia / "model-0_649.pkl", out, r"mod_invar_enc\.resnet_conv1\.0\.weight.*--from jsia")
    _refused("jsia", agw, out, r"not one of JSIA-ReID's files; it holds visible_module\.visible\.conv1\.weight")


def test_the_agw_codes_base_network_converts_when_named(tmp_path, officials):
    ck, dicts = officials["lba", True]  # no non-local blocks: the AGW code's --method base has the same tensors
    result = convert_official("agw", ck, tmp_path / "run", overrides=["method.variant=base"])
    assert result.config.model.pooling == "avg" and not result.config.model.non_local
    _check_landed(result, dicts, "agw", spot="lba")


def test_a_wrong_class_count_is_refused_naming_the_tensors(tmp_path, officials, capsys):
    (agw, _), (mpanet, _), (jsia, _) = (officials[s, True] for s in ("agw", "mpanet", "jsia"))
    out = tmp_path / "run"
    msg = _refused("agw", agw, out,
                   r"1 shape mismatch\(es\): classifier\.weight \(checkpoint \(4, 512\) vs model \(5, 512\)\)",
                   num_classes=5)
    assert "classifier has 4 identities, 5 were asked for" in msg
    msg = _refused("mpanet", mpanet, out, r"\d shape mismatch\(es\): ", num_classes=5)
    for name in ("classifier.weight", "visible_classifier.weight", "infrared_classifier_.weight"):
        assert name in msg
    inconsistent = official_mpanet()
    inconsistent["visible_classifier.weight"] = inconsistent["visible_classifier.weight"][:3]
    bad, _ = write_official("mpanet", tmp_path / "bad", state=inconsistent)
    _refused("mpanet", bad, out, r"visible_classifier\.weight \(checkpoint \(3, 3584\) vs model \(4, 3584\)\)")
    _refused("jsia", jsia, out, r"classifier\.fc\.weight \(checkpoint \(4, 512\) vs model \(5, 512\)\)", num_classes=5)
    # the command line: one line naming the tensor, exit code 2, no traceback
    assert cli_main(["convert", "--from", "agw", str(agw), "--out", str(out), "--num-classes", "5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "classifier.weight" in err and "Traceback" not in err


def test_missing_and_unexpected_tensors_are_named(tmp_path):
    sd = official_mpanet()
    del sd["backbone.layer2.1.conv2.weight"]
    sd["bn_neck.extra"] = torch.zeros(3)
    ck, _ = write_official("mpanet", tmp_path / "bad", state=sd)
    msg = _refused("mpanet", ck, tmp_path / "run", r"1 missing key\(s\): backbone\.layer2\.1\.conv2\.weight")
    assert "1 unexpected key(s): bn_neck.extra" in msg
    sd = official_mpanet()
    sd["center_loss.centers"] = torch.zeros(NUM_CLASSES, 3584)  # the optional center loss: left out, listed
    ck, _ = write_official("mpanet", tmp_path / "mpanet", state=sd)
    assert convert_official("mpanet", ck, tmp_path / "ok").ignored == ["center_loss.centers"]


def test_agw_non_local_width_of_the_current_model_py_is_a_config_value(tmp_path):
    """The AGW model.py on GitHub makes each non-local block in_channels // 2 wide (older copies: 1)."""
    sd = official_agw(width=lambda c: c // 2)
    ck, dicts = write_official("agw", tmp_path / "agw", state=sd)
    result = convert_official("agw", ck, tmp_path / "run")
    assert result.config.model.non_local_reduction == 2
    _check_landed(result, dicts, "agw")


def test_an_existing_run_directory_is_not_overwritten(tmp_path, officials):
    ck, _ = officials["lba", True]
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="already exists and is not an empty folder"):
        convert_official("lba", ck, out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


# ---------------------------------------------------------------------------------------------- no code runs


class _Plant:
    """Unpickling this creates a marker file: proof that loading executed code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_planted_pickle_is_refused_and_runs_nothing(tmp_path, capsys):
    marker = tmp_path / "code-ran"
    evil = tmp_path / "sysu_agw_best.t"  # a torch file with an object inside the official container
    torch.save({"net": {"classifier.weight": _Plant(marker)}, "mAP": np.float64(0.5)}, evil)
    _refused("agw", evil, tmp_path / "run", r"holds a Python object \(\w+\) and loading it could run code")
    raw = tmp_path / "raw.t"  # a bare pickle
    raw.write_bytes(pickle.dumps({"net": {"classifier.weight": _Plant(marker)}}))
    _refused("mpanet", raw, tmp_path / "run", f"cannot read {re.escape(str(raw))}")
    folder = tmp_path / "jsia"
    folder.mkdir()
    for i in range(4):
        (folder / f"model-{i}_649.pkl").write_bytes(evil.read_bytes())
    _refused("jsia", folder, tmp_path / "run", r"cannot read .*model-0_649\.pkl")
    assert cli_main(["convert", "--from", "lba", str(evil), "--out", str(tmp_path / "run")]) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert not marker.exists(), "loading the checkpoint executed code"


def test_only_the_numpy_metric_types_are_allowed_beside_the_weights(tmp_path):
    from vireid.runs.checkpoint import read_foreign_weights

    sd = {"classifier.weight": torch.ones(2, 3)}
    odd = tmp_path / "odd.t"
    torch.save({"net": sd, "when": np.datetime64("2021-08-22")}, odd)  # a NumPy type no official script saves
    _refused("lba", odd, tmp_path / "run", r"holds a Python object \(numpy\.dtypes\.DateTime64DType\)")
    # a PyTorch < 1.6 file (the legacy format) written under NumPy 1's module names reads as plain numbers
    buf = io.BytesIO()
    torch.save({"net": sd, **_metrics()}, buf, _use_new_zipfile_serialization=False)
    legacy = tmp_path / "legacy.t"
    legacy.write_bytes(buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert b"numpy.core.multiarray" in legacy.read_bytes()
    data = read_foreign_weights(legacy, "an AGW checkpoint", numpy_values=True)
    assert torch.equal(data["net"]["classifier.weight"], sd["classifier.weight"])
    assert data["mINP"] == pytest.approx(0.353) and data["cmc"].dtype == np.float32
    with pytest.raises(CheckpointError, match="holds a Python object"):  # only when asked for
        read_foreign_weights(legacy, "an AGW checkpoint")


def test_the_python_face_exports_the_converter():
    import vireid

    assert vireid.convert_official is convert_official and "convert_official" in vireid.__all__
