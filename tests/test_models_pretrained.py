"""Loading torchvision-format ResNet weights into ResNetBackbone (never downloads)."""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision

from vireid.core import CheckpointError, Modality
from vireid.models import ResNetBackbone, imagenet_cache_path, load_pretrained
from vireid.models.build import build_backbone


@pytest.fixture(scope="module")
def tv_resnet18() -> torchvision.models.ResNet:
    torch.manual_seed(123)
    net = torchvision.models.resnet18(weights=None)
    with torch.no_grad():  # non-trivial BN statistics so a missed buffer shows up
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    return net.eval()


@pytest.fixture()
def state_file(tmp_path, tv_resnet18):
    path = tmp_path / "r18.pth"
    torch.save(tv_resnet18.state_dict(), path)
    return path


def _save(tmp_path, state, name="bad.pth"):
    path = tmp_path / name
    torch.save(state, path)
    return path


def test_weights_land_in_both_stems_and_shared_layers(state_file, tv_resnet18):
    sd = tv_resnet18.state_dict()
    net = build_backbone("resnet18", modality_specific=("stem", "layer1"), pretrained=str(state_file))
    for m in ("visible", "infrared"):
        assert torch.equal(net.stem[m].conv1.weight, sd["conv1.weight"])
        assert torch.equal(net.stem[m].bn1.running_var, sd["bn1.running_var"])
        assert torch.equal(net.layer1[m].blocks[1].conv2.weight, sd["layer1.1.conv2.weight"])
    assert net.stem["visible"].conv1.weight.data_ptr() != net.stem["infrared"].conv1.weight.data_ptr()
    assert torch.equal(net.layer4.blocks[0].downsample[1].running_mean, sd["layer4.0.downsample.1.running_mean"])


def test_loaded_backbone_reproduces_torchvision_features(state_file, tv_resnet18):
    net = build_backbone("resnet18", last_stride=2, modality_specific=("stem",), pretrained=str(state_file)).eval()
    x = torch.randn(2, 3, 64, 32)
    body = torch.nn.Sequential(*list(tv_resnet18.children())[:-2])
    with torch.no_grad():
        torch.testing.assert_close(net(x, torch.tensor([0, 1])), body(x), rtol=1e-5, atol=1e-5)


def test_report_and_non_local_keep_their_init(state_file):
    torch.manual_seed(0)
    net = ResNetBackbone("resnet18", non_local=True)
    report = load_pretrained(net, str(state_file))
    assert report.source == str(state_file)
    assert report.kept_init and all(".non_local." in k for k in report.kept_init)
    assert torch.equal(net.layer3.non_local["1"].W[1].weight, torch.zeros(256))
    # stem has 2 copies: conv1 + 5 bn1 entries counted twice
    assert report.loaded == len(torchvision.models.resnet18().state_dict()) - 2 + 6


def test_four_channel_conv1_gets_rgb_filters_and_their_mean(state_file, tv_resnet18):
    net = build_backbone("resnet18", in_channels=4, modality_specific=(), pretrained=str(state_file))
    w, ref = net.stem.conv1.weight, tv_resnet18.conv1.weight
    assert w.shape == (64, 4, 7, 7)
    assert torch.equal(w[:, :3], ref)
    torch.testing.assert_close(w[:, 3], ref.mean(dim=1))


def test_files_without_num_batches_tracked_are_accepted(tmp_path, tv_resnet18):
    sd = {k: v for k, v in tv_resnet18.state_dict().items() if not k.endswith("num_batches_tracked")}
    net = build_backbone("resnet18", pretrained=str(_save(tmp_path, sd, "old.pth")))
    assert torch.equal(net.layer2.blocks[0].conv1.weight, sd["layer2.0.conv1.weight"])


def test_renamed_key_is_refused_naming_both_keys(tmp_path, tv_resnet18):
    sd = dict(tv_resnet18.state_dict())
    sd["layer2.0.convX.weight"] = sd.pop("layer2.0.conv1.weight")
    with pytest.raises(CheckpointError) as err:
        build_backbone("resnet18", pretrained=str(_save(tmp_path, sd)))
    msg = str(err.value)
    assert "1 missing key(s): layer2.0.conv1.weight" in msg
    assert "1 unexpected key(s): layer2.0.convX.weight" in msg
    assert "bad.pth" in msg


def test_wrong_shape_is_refused_with_both_shapes(tmp_path, tv_resnet18):
    sd = dict(tv_resnet18.state_dict())
    sd["layer3.1.bn2.weight"] = torch.ones(10)
    shapes = r"1 shape mismatch\(es\): layer3\.1\.bn2\.weight \(checkpoint \(10,\) vs model \(256,\)\)"
    with pytest.raises(CheckpointError, match=shapes):
        build_backbone("resnet18", pretrained=str(_save(tmp_path, sd)))


def test_resnet50_into_resnet18_lists_first_keys_and_counts(tmp_path):
    sd = torchvision.models.resnet50(weights=None).state_dict()
    with pytest.raises(CheckpointError, match=r"\d+ unexpected key\(s\): .* \(\+\d+ more\); \d+ shape mismatch\(es\)"):
        build_backbone("resnet18", pretrained=str(_save(tmp_path, sd)))


def test_ddp_prefix_gets_a_hint(tmp_path, tv_resnet18):
    sd = {"module." + k: v for k, v in tv_resnet18.state_dict().items()}
    with pytest.raises(CheckpointError, match="strip that prefix"):
        build_backbone("resnet18", pretrained=str(_save(tmp_path, sd)))


def test_missing_or_unreadable_file(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(CheckpointError, match=f"not found: {missing}"):
        build_backbone("resnet18", pretrained=str(missing))
    with pytest.raises(CheckpointError, match="found a list"):
        build_backbone("resnet18", pretrained=str(_save(tmp_path, [1, 2])))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a pickle")
    with pytest.raises(CheckpointError, match="junk.pth: cannot be read"):
        build_backbone("resnet18", pretrained=str(junk))


@pytest.fixture()
def empty_hub(tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", str(hub))  # what torch.hub.set_dir sets; restored after
    return hub


def test_imagenet_offline_error_names_file_and_directory(empty_hub, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(CheckpointError) as err:
        build_backbone("resnet18", pretrained="imagenet")
    msg = str(err.value)
    assert "resnet18-f37072fd.pth" in msg and str(empty_hub / "checkpoints") in msg
    assert "no network" in msg
    assert imagenet_cache_path("resnet50").name == "resnet50-0676ba61.pth"  # V1, not V2


def test_imagenet_uses_the_hub_cache_without_downloading(empty_hub, monkeypatch, tv_resnet18):
    def no_download(*args, **kwargs):
        raise AssertionError("must not download when the cache has the file")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    (empty_hub / "checkpoints").mkdir(parents=True)
    torch.save(tv_resnet18.state_dict(), empty_hub / "checkpoints" / "resnet18-f37072fd.pth")
    net = build_backbone("resnet18", pretrained="imagenet")
    assert torch.equal(net.branch("stem", Modality.INFRARED).conv1.weight, tv_resnet18.conv1.weight)


def test_imagenet_download_path_is_used_when_cache_is_empty(empty_hub, monkeypatch, tv_resnet18):
    calls = []

    def fake_download(url, *args, **kwargs):
        calls.append(url)
        return tv_resnet18.state_dict()

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_download)
    net = build_backbone("resnet18", pretrained="imagenet")
    assert calls == [torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url]
    assert torch.equal(net.layer1.blocks[0].conv1.weight, tv_resnet18.layer1[0].conv1.weight)
