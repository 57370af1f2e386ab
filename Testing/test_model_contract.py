"""The model contract: every built-in model keeps it, and a model added in one file
and one line (here: registered by the test) is offered by the CLI, trained by the
engine, scored by the scorer and listed in the panels."""

import dataclasses

import pytest
import torch
from torch import nn

from uadcore.models import MODELS, AnomalyModel, ClosedFormModel, ModelSpec, ReconstructionModel, StagedModel, register_model
from uadcore.preprocess import PRESETS
from uadcore.score.maps import KINDS
from uadcore.train import TrainConfig

SETTINGS = {f.name for f in dataclasses.fields(TrainConfig)}


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_keeps_the_contract_its_spec_declares(name):
    spec = MODELS[name]
    assert spec.name == name and spec.preset in PRESETS
    assert spec.maps and all(kind in KINDS for kind in spec.maps), spec.maps
    assert set(spec.train) <= SETTINGS and not set(spec.train) & {"model", "model_params", "preset_params", "data"}
    shape = (16, 20, 16) if spec.preset.startswith("brain3d") else (64, 64)
    model = spec.build(shape, **spec.small)
    assert isinstance(model, AnomalyModel)
    assert isinstance(model, ReconstructionModel) == ("rec" in spec.maps)  # the rec map needs a reconstruction
    assert isinstance(model, StagedModel) == (len(spec.stages) > 1)
    assert isinstance(model, ClosedFormModel) == spec.closed_form


class TinyAE(nn.Module):
    """The smallest autoencoder: x (B, 1, ...) -> a 1x1 convolution of itself."""

    def __init__(self, in_shape, width=2, in_channels=1):
        super().__init__()
        convolution = (nn.Conv2d, nn.Conv3d)[len(in_shape) - 2]
        self.net = nn.Sequential(convolution(in_channels, width, 1), nn.ReLU(), convolution(width, in_channels, 1))

    def reconstruct(self, x):
        return self.net(x)

    def loss_per_sample(self, x):
        return (self.net(x) - x).pow(2).flatten(1).mean(1)


TINY = ModelSpec("tinyae", TinyAE, "brain3d-behrendt", maps=("rec",), summary="a test's autoencoder", small={"width": 1},
                 train={"epochs": 2, "reinit_at": []})


@pytest.fixture()
def tiny_registered():
    register_model(TINY)
    yield TINY
    del MODELS[TINY.name]


def test_a_registered_model_is_offered_trained_and_scored(tiny_registered, tmp_path, cohort):
    from uadcore.cli import build_parser
    from uadcore.cli.train import config_from_args
    from uadcore.io import read_manifest
    from uadcore.score.scorer import Scorer
    from uadcore.train import Events, train

    parser = build_parser()
    args = parser.parse_args(["train", "--model", "tinyae", "--data", cohort, "--out", str(tmp_path / "run"), "--size", "small",
                              "--val-fraction", "0", "--workers", "1", "--no-outlier-removal"])
    config = config_from_args(args)
    assert (config.model, config.epochs, config.model_params) == ("tinyae", 2, {"width": 1})  # the spec's defaults
    summary = train(config, args.out, events=Events(progress=False))
    assert summary["epochs"] == 2
    scorer = Scorer(args.out)
    assert scorer.kinds == ("rec",)
    result = scorer.score(read_manifest(cohort)[0].path)
    assert result.score > 0 and result.scan_map().shape == result.prepared.scan_grid.shape


def test_the_score_help_lists_a_registered_model(tiny_registered, capsys):
    from uadcore.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["score", "--help"])
    assert "tinyae rec" in " ".join(capsys.readouterr().out.split())


def test_the_panels_list_a_registered_model_and_its_map_kinds(tiny_registered, qtbot):
    pytest.importorskip("slicer", reason="slicer-core is in the gui extra")
    pytest.importorskip("PyQt5", reason="PyQt5 is in the gui extra")
    from SlicerUADLib.gui import MainWindow

    main = MainWindow()
    qtbot.addWidget(main.window)
    try:
        models = [main.train.model.itemText(i) for i in range(main.train.model.count())]
        assert "tinyae" in models and main.train.model.currentText() == TrainConfig.model
        assert main.train.epochs.value() > 0 and main.train.gamma.value() == TrainConfig.gamma
        kinds = [main.maps.kind.itemText(i) for i in range(main.maps.kind.count())]
        assert {kind for spec in MODELS.values() for kind in spec.maps} <= set(kinds)
    finally:
        main.close()


def test_a_second_model_of_the_same_name_is_refused(tiny_registered):
    with pytest.raises(ValueError, match="registered already"):
        register_model(dataclasses.replace(TINY, summary="another"))


def test_the_readme_example_model_keeps_the_contract():
    """The model of the README's "Adding a model" section, as printed there."""
    import pathlib
    import re

    readme = (pathlib.Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Adding a model", 1)[1].split("\n## ", 1)[0]
    namespace = {}
    exec(re.search(r"```python\n(.*?)```", section, re.S).group(1), namespace)
    spec = namespace["SPEC"]
    assert spec.preset in PRESETS and all(kind in KINDS for kind in spec.maps)
    model = spec.build((8, 10, 8), **spec.small)
    x = torch.rand(2, 1, 8, 10, 8)
    assert isinstance(model, AnomalyModel) and model.loss_per_sample(x).shape == (2,)
    assert model.reconstruct(x).shape == x.shape
