"""Device and precision policy (bharateo/models/device.py): names are checked, a device this machine
lacks is refused in words, and training/evaluation run on the model's device."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bharateo import cli
from bharateo.models import device
from bharateo.training import evaluate as ev
from bharateo.data.chips import ChipConfig
from bharateo.errors import ConfigError
from bharateo.models.notebook import ModelConfig
from bharateo.training.experiment import RunConfig
from bharateo.storage.runs import list_runs, load_model, load_run, save_run
from bharateo.training.loop import StepMetrics, TrainConfig, TrainingEnd, make_model, train
from tests.support.models import tiny_chips

CUDA_MESSAGE = ("CUDA is not available on this machine (torch.cuda.is_available() is False): "
                "use --device cpu")


def tiny_model(seed: int = 0):
    return make_model(ModelConfig(img_size=32, patch_size=8, embed_dim=16, depth=1, heads=2), seed)


@pytest.fixture
def no_cuda(monkeypatch):
    """This machine, as far as torch can tell, has no CUDA (whatever it really has)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_defaults_are_cpu_and_fp32():
    assert device.DEVICES == ("cpu", "cuda", "mps") and "fp32" in device.PRECISIONS
    config = TrainConfig()
    assert (config.device, config.precision) == ("cpu", "fp32")
    assert device.resolve_device(config.device) == torch.device("cpu")


@pytest.mark.parametrize("field, value, match", [("device", "tpu", "Unknown device 'tpu'"),
                                                 ("device", "CUDA", "Unknown device 'CUDA'"),
                                                 ("precision", "fp8", "Unknown precision 'fp8'")])
def test_unknown_names_are_config_errors(field, value, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**{field: value}).validate()
    with pytest.raises(ConfigError, match=match):
        RunConfig(train=TrainConfig(**{field: value})).validate()


def test_cuda_without_cuda_says_what_to_do(no_cuda):
    with pytest.raises(ConfigError) as info:
        device.resolve_device("cuda")
    assert str(info.value).startswith(CUDA_MESSAGE)
    model, chips = tiny_model(), tiny_chips()
    before = [t.clone() for t in model.parameters()]
    with pytest.raises(ConfigError, match="CUDA is not available"):
        next(train(model, chips, TrainConfig(epochs=1, device="cuda")))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # never touched


def test_mps_without_mps_says_what_to_do(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="MPS is not available.*use --device cpu"):
        device.resolve_device("mps")


def test_cli_refuses_a_missing_gpu_before_reserving_the_run(no_cuda, capsys):
    assert cli.main(["train", "--run", "gpu-run", "--device", "cuda", "--quiet"]) == 2
    assert CUDA_MESSAGE in capsys.readouterr().err
    assert list_runs() == []  # no reservation left behind
    # a name that is no device at all: the setting's one check (device.check_device_name), exit 2
    assert cli.main(["train", "--run", "x", "--device", "tpu"]) == 2
    assert "Unknown device 'tpu': use one of cpu, cuda, mps." in capsys.readouterr().err


def test_fp32_autocast_changes_nothing():
    model, chips = tiny_model(), tiny_chips(4)
    tokens, mask = chips.tokens(), torch.zeros(4, 16, dtype=torch.bool)
    mask[:, ::2] = True
    with torch.no_grad():
        plain = model(tokens, mask)
        with device.autocast("cpu", "fp32"):
            policy = model(tokens, mask)
    assert all(torch.equal(a, b) for a, b in zip(plain, policy))
    with pytest.raises(ConfigError, match="Unknown precision"):
        device.autocast("cpu", "fp16")


def test_saved_weights_are_cpu_tensors_and_load_onto_the_asked_device(no_cuda):
    model = tiny_model()
    state = device.cpu_state_dict(model)
    assert list(state) == list(model.state_dict())
    assert all(t.device.type == "cpu" for t in state.values())
    config = RunConfig(chips=ChipConfig(chip_size=32, patch_size=8), model=model.config)
    save_run("cpu-run", model, config.to_dict(), [], {})
    loaded = load_model(load_run("cpu-run"), device="cpu")
    assert device.model_device(loaded) == torch.device("cpu") and not loaded.training
    with pytest.raises(ConfigError, match="CUDA is not available"):
        load_model(load_run("cpu-run"), device="cuda")


def _train_on(name: str):
    model, chips = tiny_model(), tiny_chips()
    events = list(train(model, chips, TrainConfig(epochs=2, batch_size=8, lr=2e-3, device=name),
                        heldout=tiny_chips(seed=1)))
    losses = [e.loss for e in events if isinstance(e, StepMetrics)]
    assert isinstance(events[-1], TrainingEnd) and events[-1].reason == "finished"
    return model, losses, events[-1].history


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_training_on_cuda_matches_cpu():
    cpu_model, cpu_losses, cpu_history = _train_on("cpu")
    gpu_model, gpu_losses, gpu_history = _train_on("cuda")
    assert device.model_device(gpu_model).type == "cuda"
    np.testing.assert_allclose(gpu_losses, cpu_losses, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(gpu_history[-1]["heldout_rec_mae"],
                               cpu_history[-1]["heldout_rec_mae"], rtol=1e-3, atol=1e-4)
    for a, b in zip(gpu_model.parameters(), cpu_model.parameters()):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-3, atol=1e-4)
    # the same seeded masks on both devices; results come back on the CPU
    chips = tiny_chips(seed=2)
    gpu_pred, gpu_logits, gpu_mask = ev.predict(gpu_model, chips, 0.5)
    cpu_pred, cpu_logits, cpu_mask = ev.predict(cpu_model, chips, 0.5)
    assert gpu_mask.device.type == "cpu" and torch.equal(gpu_mask, cpu_mask)
    torch.testing.assert_close(gpu_pred, cpu_pred, rtol=1e-3, atol=1e-3)
    rec = ev.reconstruct_chip(gpu_model, chips, 3, 0.75)
    assert isinstance(rec.target, np.ndarray) and rec.target.shape == (32, 32, 3)
