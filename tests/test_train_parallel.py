"""The DDP plumbing in one process: the methods' data-parallel declarations, the DDP path equal bit for bit to the
plain one at world size 1, and the train.sync_bn / channels_last / compile options (tests/test_ddp.py runs 2 ranks)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch
import torch.distributed as dist
from torch import nn

from tests.engine_fixtures import make_tiny_sysu, tiny_train_config
from tests.helpers import builtin_methods, tiny_batch, tiny_config
from vireid.config import load_config
from vireid.core import Batch, ConfigError, TrainingError
from vireid.engine.stepper import LossForward, TrainIteration, TrainStepper, check_ddp_method, wrap_ddp
from vireid.engine.trainer import Trainer, prepare_network
from vireid.methods import build_method
from vireid.methods.base import DataParallel, Method, TrainingLoss
from vireid.utils.distributed import DistInfo, use_sync_batchnorm

NUM_CLASSES = 6
DDP_METHODS = ("baseline", "mpanet", "lba")


@contextlib.contextmanager
def one_rank_group(tmp_path) -> Iterator[None]:
    """A gloo process group of world size 1 in this process, destroyed afterwards."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _build(name: str) -> Method:
    torch.manual_seed(0)
    method = build_method(tiny_config(name), NUM_CLASSES)
    method.train()
    method.on_epoch_start(0)
    return method


def _batches(name: str, n: int = 2) -> list[Batch]:
    return [tiny_batch(tiny_config(name), NUM_CLASSES, seed=s) for s in range(n)]


# ---------------------------------------------------------------- declarations


@pytest.mark.parametrize("name", builtin_methods())
def test_every_method_declares_a_path_the_engine_can_run(name):
    method = _build(name)
    spec = method.data_parallel()
    assert spec.ddp == (name in DDP_METHODS)
    if spec.ddp:
        check_ddp_method(method)  # no error: training_loss, and no training_step override


def test_a_ddp_declaration_without_training_loss_is_refused():
    class StepOnly(Method):
        def training_step(self, batch, step):
            return {}

        def data_parallel(self):
            return DataParallel(ddp=True)

    with pytest.raises(TrainingError, match=r"StepOnly\.data_parallel\(\) says ddp=True but StepOnly has no "
                                            r"training_loss; implement training_loss .* or declare"):
        check_ddp_method(StepOnly(tiny_config("baseline"), 2))


def test_a_ddp_declaration_with_its_own_training_step_is_refused():
    class Both(Method):
        def training_loss(self, batch, step):
            raise AssertionError("not called")

        def training_step(self, batch, step):
            return {}

        def data_parallel(self):
            return DataParallel(ddp=True)

    with pytest.raises(TrainingError, match=r"overrides training_step, which DDP runs would skip"):
        check_ddp_method(Both(tiny_config("baseline"), 2))


def test_training_loss_scalars_are_read_after_the_step():
    out = TrainingLoss(torch.tensor(1.5), {}, {"a": torch.tensor(2.0), "b": 3})
    assert out.scalars() == {"a": 2.0, "b": 3.0} and out.optimizer == "main"


# ---------------------------------------------------------------- DDP path == plain path


@pytest.mark.parametrize("name", DDP_METHODS)
def test_the_ddp_path_at_world_size_1_equals_training_step_bit_for_bit(name, tmp_path):
    batches = _batches(name)
    plain = _build(name)
    plain_stepper = TrainStepper(plain.optimizers())
    plain_logs = []
    for i, b in enumerate(batches):
        plain_stepper.global_step = i
        plain_logs.append(TrainIteration(plain, plain_stepper)(b))

    wrapped = _build(name)
    stepper = TrainStepper(wrapped.optimizers())
    with one_rank_group(tmp_path):
        iteration = TrainIteration(wrapped, stepper, wrap_ddp(wrapped, torch.device("cpu")))
        assert iteration.path == "ddp"
        logs = []
        for i, b in enumerate(batches):
            stepper.global_step = i
            logs.append(iteration(b))
    assert logs == plain_logs
    a, b = plain.state_dict(), wrapped.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]


def test_the_ddp_wrapper_adds_no_key_to_the_method_state():
    method = _build("baseline")
    keys = set(method.state_dict())
    assert {k.removeprefix("method.") for k in LossForward(method).state_dict()} == keys
    assert not any(k.startswith("module.") for k in method.state_dict())


def test_a_single_process_run_takes_the_plain_path(tmp_path):
    data = make_tiny_sysu(tmp_path / "sysu")
    trainer = Trainer(tiny_train_config(data, "train.epochs=1"), tmp_path / "run")
    trainer.fit()
    assert trainer.iteration.path == "single" and trainer.iteration.ddp is None
    assert not trainer.stepper.distributed


# ---------------------------------------------------------------- options


@pytest.mark.parametrize("key", ["sync_bn", "channels_last", "compile"])
def test_the_speed_options_default_off_and_refuse_a_non_boolean(key):
    assert getattr(load_config(None).train, key) is False
    assert getattr(load_config(None, [f"train.{key}=true"]).train, key) is True
    with pytest.raises(ConfigError, match=rf"^config key 'train\.{key}' expects bool, got 'fast'$"):
        load_config(None, [f"train.{key}=fast"])


def test_sync_bn_on_the_cpu_is_a_one_line_config_error():
    method = _build("baseline")
    with pytest.raises(ConfigError, match=r"^train\.sync_bn=true needs CUDA devices \(PyTorch's SyncBatchNorm does "
                                          r"not run on the cpu\); set train\.sync_bn=false, or train on GPUs$"):
        use_sync_batchnorm(method, torch.device("cpu"))


def test_sync_bn_keeps_parameters_buffers_and_keys():
    method = _build("baseline")
    before = method.state_dict(keep_vars=True)
    use_sync_batchnorm(method, torch.device("cuda", 0))  # converting needs no GPU; running it would
    after = method.state_dict(keep_vars=True)
    assert list(before) == list(after)
    assert all(before[k] is after[k] for k in before), "SyncBatchNorm must reuse the BatchNorm tensors"
    assert any(isinstance(m, nn.SyncBatchNorm) for m in method.modules())
    assert not any(type(m) in (nn.BatchNorm1d, nn.BatchNorm2d) for m in method.modules())


def test_sync_bn_is_ignored_in_a_single_process():
    method = _build("baseline")
    prepare_network(method, tiny_config("baseline", "train.sync_bn=true").train, DistInfo(), torch.device("cpu"))
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in method.modules())


@pytest.mark.slow
def test_channels_last_and_compile_keep_checkpoint_keys_and_evaluation(tmp_path, monkeypatch):
    compiled: list[nn.Module] = []
    original = nn.Module.compile

    def eager_compile(self, *args, **kwargs):  # dynamo captures the graph; no C++ build in a unit test
        compiled.append(self)
        return original(self, *args, **{**kwargs, "backend": "eager"})

    monkeypatch.setattr(nn.Module, "compile", eager_compile)
    data = make_tiny_sysu(tmp_path / "sysu")
    fast = Trainer(tiny_train_config(data, "train.epochs=1", "train.channels_last=true", "train.compile=true"),
                   tmp_path / "fast").fit()
    assert compiled == [fast]
    saved = torch.load(tmp_path / "fast" / "checkpoints" / "last.pt", weights_only=False)["model"]
    fresh = build_method(tiny_config("baseline"), fast.num_classes)
    assert list(saved) == list(fresh.state_dict())
    fresh.load_state_dict(saved)
    fresh.eval()
    fast.eval()
    images = torch.randn(4, 3, 32, 16)
    codes = torch.tensor([0, 0, 1, 1], dtype=torch.int8)  # Modality codes: visible, infrared
    ref = fresh.embed(images, codes)
    out = fast.embed(images, codes)
    for kind in ("bn", "pool"):
        assert torch.allclose(ref[kind], out[kind], atol=1e-5), kind
