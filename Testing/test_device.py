"""One device, picked once and passed down as a `torch.device`: what the engine,
the scorer and DDP are handed is what they compute on, never a quiet CPU.

CI has no GPU, so these tests hand the code a device that is not the default one
(``cpu:0`` is not ``cpu``, and a configuration that says ``cuda`` where there is
none): a place that loses the device or picks one again fails here."""

import pytest
import torch

from uadcore.device import amp_dtype, pick_device
from uadcore.errors import UADError
from uadcore.models import make_model
from uadcore.preprocess import make_preset
from uadcore.score.scorer import Scorer
from uadcore.train import STOP_FILE, Events, TrainConfig, train
from uadcore.train.distributed import start

NOT_THE_DEFAULT = torch.device("cpu", 0)  # a CPU device, yet not equal to torch.device("cpu")
TINY = {"channels": [2, 4, 8, 16], "latent": 16}


def test_a_torch_device_comes_back_unchanged():
    assert pick_device(NOT_THE_DEFAULT) is NOT_THE_DEFAULT
    assert pick_device(torch.device("cpu")) == torch.device("cpu")
    assert pick_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the refusal on a machine without CUDA")
@pytest.mark.parametrize("asked", [torch.device("cuda", 0), torch.device("cuda"), "cuda", "cuda:1"])
def test_cuda_is_never_answered_with_the_cpu(asked):
    with pytest.raises(UADError, match="no CUDA GPU"):
        pick_device(asked)


def test_names_pick_the_rank_s_gpu_and_unknown_names_are_refused():
    assert pick_device("auto") == (torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu"))
    with pytest.raises(UADError, match="not one UAD knows"):
        pick_device("gpu")


def test_no_mixed_precision_on_the_cpu():
    assert amp_dtype(NOT_THE_DEFAULT) is None and amp_dtype(torch.device("cpu"), enabled=True) is None


def test_a_scorer_of_a_model_in_memory_computes_where_it_is_told():
    # the GPU crash at training's end: the run's torch.device was turned into the CPU here
    model = make_model("normative", (8, 8, 8))
    scorer = Scorer.of_model(model, "normative", make_preset("brain3d-behrendt"), NOT_THE_DEFAULT)
    assert scorer.device == NOT_THE_DEFAULT


@pytest.mark.parametrize("model", ["normative", "ae3d"])
def test_training_computes_on_the_device_it_is_handed(tmp_path, cohort, model):
    # the configuration asks for CUDA, which this machine may lack: a place that
    # picks the device again from the configuration, instead of using the one it
    # was handed, raises "no CUDA GPU" on a CPU machine
    config = TrainConfig.from_dict({"data": cohort, "model": model, "device": "cuda", "epochs": 2, "outlier_every": 1,
                                    "removal_start": "paper", "batch_size": 2, "val_fraction": 0.34, "workers": 1,
                                    "reinit_at": [], **({"model_params": TINY} if model == "ae3d" else {})})
    summary = train(config, str(tmp_path / "run"), device=NOT_THE_DEFAULT)
    assert summary["device"] == "cpu:0" and summary["epochs"] == 2 and summary["validation"] == 1
    scorer = Scorer(summary["run"], device=NOT_THE_DEFAULT)
    assert scorer.device == NOT_THE_DEFAULT


def test_a_run_resumes_on_another_device(tmp_path, cohort):
    # begun with a configuration that says cuda (as a GPU run's does), resumed here on the CPU
    config = TrainConfig.from_dict({"data": cohort, "model": "ae3d", "model_params": TINY, "device": "cuda", "epochs": 3,
                                    "batch_size": 2, "val_fraction": 0.0, "workers": 1, "reinit_at": [],
                                    "checkpoint_every": 1})
    run = tmp_path / "run"

    class StopAfterFirstEpoch(Events):
        def emit(self, event, **fields):
            if event == "epoch":
                (run / STOP_FILE).write_text("")

    assert train(config, str(run), events=StopAfterFirstEpoch(), device="cpu")["epoch"] == 1
    run = str(run)
    if torch.cuda.is_available():
        pytest.skip("the refusal below needs a machine without CUDA")
    with pytest.raises(UADError, match="no CUDA GPU"):
        train(None, run, resume=True)  # the stored device, where there is none
    assert train(None, run, resume=True, device="cpu")["epochs"] == 3


def test_one_process_needs_no_process_group():
    assert not start(NOT_THE_DEFAULT).enabled and not start("cuda").enabled


@pytest.mark.parametrize("name", ["ae3d", "vae3d"])
def test_the_full_resolution_layers_compute_in_float32_under_autocast(name):
    # cuDNN's bf16 kernels for them are slow (benchmarks/RESULTS.md, GPU); the CPU's
    # autocast shows the same dtypes the GPU's would
    model = make_model(name, (16, 16, 16), channels=[2, 4, 8, 16], latent=8).eval()
    seen = []
    model.encoder[0].register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    x = torch.rand(1, 1, 16, 16, 16)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert model.reconstruct(x).dtype == torch.float32 and seen[-1] == torch.float32
        model.edges_in_float32 = False
        assert model.reconstruct(x).dtype == torch.bfloat16 and seen[-1] == torch.bfloat16
    assert model.reconstruct(x).dtype == torch.float32  # no autocast: float32 throughout


def test_a_float16_run_keeps_its_loss_scale_through_a_checkpoint():
    from uadcore.train.engine import Learner, TrainState, make_scaler, snapshot

    scaler = make_scaler(NOT_THE_DEFAULT, torch.float16)
    assert scaler.is_enabled() and not make_scaler(NOT_THE_DEFAULT, torch.bfloat16).is_enabled()
    scaler.scale(torch.ones(1))  # the scale exists once a loss was scaled
    scaler.update(new_scale=512.0)  # where overflowing steps brought it
    model = torch.nn.Linear(2, 1)
    learner = Learner(model, "main", torch.optim.Adam(model.parameters()), model, scaler)
    state = TrainState(3, torch.ones(4, dtype=torch.bool), [], [], {}, 10)
    saved = snapshot(learner, state)["scaler"]
    assert make_scaler(NOT_THE_DEFAULT, torch.float16, saved).get_scale() == 512.0  # not 65,536 again
