"""One registration story: datasets, methods and protocols share a leaf Registry with lazy built-ins, user
registration at run time and a did-you-mean on a miss; every registered reader and protocol is tested here."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from dataclasses import dataclass

import pytest

from vireid import register_dataset, register_method, register_protocol
from vireid.config import options_class
from vireid.core import ConfigError, DatasetError
from vireid.data.datasets import ReIDDataset, load_dataset
from vireid.protocols import Protocol, protocol_from_samples
from vireid.registry import DATASETS, METHODS, PROTOCOLS, Registry


def test_importing_config_and_registry_imports_no_method_and_no_torch():
    code = ("import sys, vireid, vireid.config, vireid.registry\n"
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith(('vireid.methods', 'vireid.data',"
            " 'vireid.protocols'))]\n"
            "assert not bad, bad\n"
            "from vireid.registry import METHODS\n"
            "assert 'baseline' in METHODS.names() and 'vireid.methods.baseline' in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_builtins_load_on_first_use_only():
    loaded = []

    class Recording(Registry):
        def _load_builtins(self) -> None:
            if not self._loaded:
                loaded.append(self.kind)
            super()._load_builtins()

    reg = Recording("thing", builtins=("json",))  # any importable module stands in for the built-ins
    assert loaded == []
    assert reg.names() == [] and loaded == ["thing"]
    reg.names()
    assert loaded == ["thing"]  # once


@pytest.mark.parametrize("registry", [DATASETS, METHODS, PROTOCOLS], ids=lambda r: r.kind)
def test_every_registry_suggests_the_closest_name(registry):
    name = registry.names()[0]
    with pytest.raises(ConfigError, match=rf"unknown {registry.kind} '{name}x'; did you mean '{name}'\? Available: "):
        registry.get(name + "x")
    assert registry.names(name[:2] + "*")[0] == name


@pytest.mark.parametrize("kind", ["dataset", "method", "protocol"])
def test_users_register_all_three_kinds_at_run_time(kind):
    registry, register = {"dataset": (DATASETS, register_dataset), "method": (METHODS, register_method),
                          "protocol": (PROTOCOLS, register_protocol)}[kind]

    class Mine:
        pass

    register(f"mine_{kind}")(Mine)
    try:
        assert registry.get(f"mine_{kind}") is Mine and f"mine_{kind}" in registry.names()
        with pytest.raises(ConfigError, match="already registered; pass overwrite=True"):
            register(f"mine_{kind}")(type("Other", (), {}))
        builtin = registry.names()[0]
        with pytest.raises(ConfigError, match="already registered"):
            register(builtin)(Mine)  # built-ins are loaded first, so they cannot be shadowed silently
    finally:
        registry.unregister(f"mine_{kind}")
    assert f"mine_{kind}" not in registry


# ------------------------------------------------------------------ every registered dataset reader


@pytest.mark.parametrize("name", DATASETS.names())
def test_reader_declares_its_options(name, tmp_path):
    reader = DATASETS.get(name)
    cls = options_class(reader)
    assert dataclasses.is_dataclass(cls)
    defaults = dataclasses.asdict(cls())  # every option has a default
    with pytest.raises(ConfigError, match=rf"{name} reader: unknown option\(s\) 'no_such_option'"):
        reader(tmp_path, no_such_option=1)
    reader(tmp_path, **defaults)  # the constructor reads nothing: a missing root fails only in load()


@pytest.mark.parametrize("name", DATASETS.names())
def test_reader_names_a_missing_root(name, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError, match=f"dataset root {missing} does not exist"):
        load_dataset(name, missing)


# ------------------------------------------------------------------ every registered protocol


@pytest.mark.parametrize("name", PROTOCOLS.names())
def test_protocol_declares_options_dataset_and_reader_options(name):
    entry = PROTOCOLS.get(name)
    cls = options_class(entry)
    assert dataclasses.is_dataclass(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    assert entry.dataset in DATASETS
    reader_fields = {f.name for f in dataclasses.fields(options_class(DATASETS.get(entry.dataset)))}
    assert set(entry.reader_options) <= fields & reader_fields


@pytest.mark.parametrize("name", PROTOCOLS.names())
def test_protocol_builds_over_samples_with_its_defaults_and_refuses_unknown_options(name):
    defaults = {k: v for k, v in dataclasses.asdict(options_class(PROTOCOLS.get(name))()).items() if v is not None}
    proto = protocol_from_samples(name, [], **defaults)
    assert isinstance(proto, Protocol) and proto.name.startswith(PROTOCOLS.get(name).dataset)
    with pytest.raises(ConfigError, match=rf"protocol '{name}': unknown option\(s\) 'no_such_option'; valid options: "):
        protocol_from_samples(name, [], no_such_option=1)


def test_a_user_protocol_over_a_user_dataset_evaluates_through_the_registry(tmp_path):
    from vireid.core import EvalTrial, Modality, Sample

    samples = [Sample(f"{m.value}_{p}.jpg", p, 1 if m is Modality.VISIBLE else 2, m)
               for p in range(3) for m in Modality]

    @dataclass
    class PairsOptions:
        direction: str = "infrared_to_visible"

    @dataclass
    class NoReaderOptions:
        pass

    @register_dataset("tiny_pairs")
    class TinyPairs:
        Options = NoReaderOptions

        def __init__(self, root, **options):
            self.root = root

        def load(self) -> ReIDDataset:
            return ReIDDataset("tiny_pairs", self.root, train=[], test=samples)

    def build(test_samples, root=None, **options) -> Protocol:
        opts = PairsOptions(**options)
        query = [s for s in test_samples if s.modality is Modality.INFRARED]
        gallery = [s for s in test_samples if s.modality is Modality.VISIBLE]
        return Protocol("tiny_pairs", "tiny_pairs/ir2vis", dataclasses.asdict(opts), opts.direction, "none", "none",
                        "image", build=lambda: [EvalTrial("tiny_pairs/ir2vis/trial0", query, gallery, "none", "image")])

    register_protocol("tiny_pairs")(type("TinyPairsProtocol", (), {
        "Options": PairsOptions, "dataset": "tiny_pairs", "reader_options": (), "build": staticmethod(build)}))
    try:
        from vireid.protocols import get_protocol

        (trial,) = get_protocol("tiny_pairs", tmp_path).trials()
        assert [s.pid for s in trial.query] == [0, 1, 2] and len(trial.gallery) == 3
    finally:
        PROTOCOLS.unregister("tiny_pairs")
        DATASETS.unregister("tiny_pairs")


def test_a_loaded_dataset_must_match_the_protocols_reader_options(tmp_path):
    from vireid.protocols import check_dataset_matches, reader_options

    split1 = ReIDDataset("regdb", tmp_path, train=[], test=[], info={"trial": 1})
    assert reader_options("regdb", {"trial": 3, "direction": "visible_to_thermal"}) == {"trial": 3}
    check_dataset_matches("regdb", split1, {"trial": 1, "direction": "thermal_to_visible"})
    with pytest.raises(ConfigError, match=r"option trial=2 asks for another regdb trial than the dataset that was "
                                          r"loaded \(trial=1\); set data.options.trial=2"):
        check_dataset_matches("regdb", split1, {"trial": 2})
    check_dataset_matches("sysu", split1, {"mode": "indoor"})  # sysu's reader takes no protocol option
