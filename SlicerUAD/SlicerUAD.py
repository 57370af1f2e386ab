"""SlicerUAD: the 3D Slicer module of UAD. Only the ScriptedLoadableModule classes
and their wiring live here (this file cannot be imported outside Slicer);
everything else is in SlicerUADLib and the bundled uadcore, tested without the
application.

Dependencies are installed at first use, never at import, after one confirmation
that lists them: PyTorch through the PyTorch extension (PyTorchUtils), the other
packages through ``slicer.util.pip_install`` with the installed torch pinned
(`SlicerUADLib.install`); errors are shown in the GUI.
"""

import importlib.util
import os
import shutil
import sys

import ctk
import qt
import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

# Running from a source checkout (the module path added in Slicer's settings), the
# bundled engine sits in ../UADCore; an installed extension has it beside this file.
_SOURCE_ENGINE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "UADCore")
if importlib.util.find_spec("uadcore") is None and os.path.isdir(_SOURCE_ENGINE):
    sys.path.insert(0, _SOURCE_ENGINE)

from uadcore.requirements import REQUIREMENTS as _ENGINE_REQUIREMENTS, TORCH  # noqa: E402 (after the path above)

MINIMUM_TORCH = TORCH.split(">=")[1]
# torch comes through PyTorchUtils (the right CUDA build); pip installs the rest
REQUIREMENTS = [r for r in _ENGINE_REQUIREMENTS if r != TORCH]
PARAMETERS = ("model", "size", "epochs", "gamma", "outlier_removal", "run")


class SlicerUAD(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "Unsupervised Anomaly Detection"
        self.parent.categories = ["Neuroimaging"]
        self.parent.dependencies = []
        self.parent.contributors = ["The UAD developers"]
        self.parent.helpText = (
            "Train autoencoders on healthy scans with outlier removal during training, review the scans training "
            "flagged, and overlay anomaly maps (reconstruction error, KL-gradient, ELBO-gradient, Combi, classifier) "
            "on any loaded scan. Everything here is also the <code>uad</code> command."
        )
        self.parent.acknowledgementText = (
            "Methods: Behrendt et al. (3D autoencoder, outlier removal), Zimmerer et al. (VAE scores), "
            "Georgescu (masked autoencoder), Wei et al. (patch autoencoder)."
        )


def ensure_dependencies() -> bool:
    """Install what UAD needs on first use, asking once; False if the user declined
    or an installation failed (shown in the GUI). Versions are checked with
    importlib.metadata, not by importing; torch comes through the PyTorch extension
    with UAD's version requirement (the right CUDA build), the rest through pip with
    the installed torch pinned, so pip cannot replace it."""
    from SlicerUADLib.install import pip_arguments, unmet

    try:
        import PyTorchUtils
    except ModuleNotFoundError:
        slicer.util.errorDisplay("UAD needs the PyTorch extension: install it from the Extensions Manager and restart.")
        return False
    torch_logic = PyTorchUtils.PyTorchUtilsLogic()
    need_torch = not torch_logic.torchInstalled() or bool(unmet([TORCH]))
    missing = unmet(REQUIREMENTS)
    if not need_torch and not missing:
        return True
    listed = ([f"{TORCH} (through the PyTorch extension)"] if need_torch else []) + missing
    if not slicer.util.confirmOkCancelDisplay("UAD needs these Python packages:\n\n" + "\n".join(listed) + "\n\nInstall them now?",
                                              windowTitle="Install UAD's packages"):
        return False
    stale = [r for r in missing if _module_of(r) in sys.modules]  # imported already, in an older version
    try:
        with slicer.util.tryWithErrorDisplay("UAD could not install its Python packages.", waitCursor=True):
            if need_torch and torch_logic.installTorch(askConfirmation=False, torchVersionRequirement=f">={MINIMUM_TORCH}") is None:
                raise RuntimeError(f"the PyTorch extension did not install {TORCH}")
            if missing:
                slicer.util.pip_install(pip_arguments(missing))
    except Exception:
        return False  # the error was shown
    if stale and slicer.util.confirmYesNoDisplay(
            f"{', '.join(stale)} replaced versions that are already loaded. Restart 3D Slicer now to use them?"):
        slicer.util.restart()
    return True


def _module_of(requirement: str) -> str:
    name = requirement.split(">")[0].split("=")[0].split("<")[0].strip()
    return {"scikit-learn": "sklearn", "SimpleITK": "SimpleITK"}.get(name, name.replace("-", "_"))


def describe_device() -> str:
    """The device training would use here: the GPU's name and memory, or "CPU"."""
    from uadcore.device import describe, pick_device

    return describe(pick_device())


class SlicerUADWidget(ScriptedLoadableModuleWidget):
    """Builds the SlicerUADLib panels on Slicer's scene, in collapsible sections."""

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        self.logic = SlicerUADLogic()
        self.panels, self.uad = None, None
        self.device = qt.QLabel("dependencies not checked yet")
        self.prepare = qt.QPushButton("Prepare UAD (installs PyTorch and packages on first use)")
        self.prepare.clicked.connect(self.build_panels)
        self.layout.addWidget(self.device)
        self.layout.addWidget(self.prepare)
        self.layout.addStretch(1)

    def build_panels(self):
        """The button's slot: nothing may raise past it unseen (the user would see nothing)."""
        try:
            with slicer.util.tryWithErrorDisplay("UAD could not start.", waitCursor=True):
                self._build_panels()
        except Exception:
            pass  # shown in the GUI by tryWithErrorDisplay

    def _build_panels(self):
        if self.panels is not None or not ensure_dependencies():
            return
        from SlicerUADLib.logic import UADLogic
        from SlicerUADLib.panels import EvaluatePanel, MapPanel, OutlierPanel, TrainPanel

        python = shutil.which("PythonSlicer") or sys.executable
        self.uad = uad = UADLogic(slicer.mrmlScene, lambda path: slicer.util.loadVolume(path), python=python)
        train = TrainPanel(uad)
        outliers = OutlierPanel(uad, train)
        maps = MapPanel(uad)
        evaluate = EvaluatePanel(uad)
        train.on_finished = outliers.load_run
        self.panels = {"Train": train, "Outlier review": outliers, "Anomaly map": maps, "Evaluate": evaluate}
        for title, panel in self.panels.items():
            section = ctk.ctkCollapsibleButton()
            section.text = title
            qt.QVBoxLayout(section).addWidget(panel.widget)
            self.layout.insertWidget(self.layout.count() - 1, section)
        self.prepare.hide()
        self.device.text = f"Device: {describe_device()}"
        self._restore_parameters()
        for widget in (train.model, train.size, train.epochs, train.gamma, train.outlier_removal, maps.run):
            for name in ("currentIndexChanged", "valueChanged", "toggled", "textChanged"):
                if hasattr(widget, name):
                    getattr(widget, name).connect(lambda *_: self._save_parameters())

    def _restore_parameters(self):
        node, train, maps = self.logic.getParameterNode(), self.panels["Train"], self.panels["Anomaly map"]
        if node.GetParameter("model"):
            train.model.setCurrentText(node.GetParameter("model"))
            train.size.setCurrentText(node.GetParameter("size"))
            train.epochs.setValue(int(node.GetParameter("epochs")))
            train.gamma.setValue(float(node.GetParameter("gamma")))
            train.outlier_removal.setChecked(node.GetParameter("outlier_removal") == "true")
            maps.run.setText(node.GetParameter("run"))

    def _save_parameters(self):
        node, train, maps = self.logic.getParameterNode(), self.panels["Train"], self.panels["Anomaly map"]
        values = {"model": train.model.currentText, "size": train.size.currentText, "epochs": str(train.epochs.value),
                  "gamma": str(train.gamma.value), "outlier_removal": "true" if train.outlier_removal.isChecked() else "false",
                  "run": maps.run.text}
        for name in PARAMETERS:
            node.SetParameter(name, values[name])

    def cleanup(self):
        # on module cleanup and application exit: every job stopped (with its
        # checkpoint), none left training as an orphan
        for panel in (self.panels or {}).values():
            job = getattr(panel, "job", None)
            if job is not None and job.running:
                job.stop()
        if self.uad is not None:
            self.uad.stop_watching()  # the panels observe the scene: Close Scene resets them


class SlicerUADLogic(ScriptedLoadableModuleLogic):
    """Holds the parameter node; the work is done by SlicerUADLib.logic.UADLogic."""


class SlicerUADTest(ScriptedLoadableModuleTest):
    """A tiny end-to-end case inside Slicer: synthesise scans, train a small AE3D in
    a background process, load a scan, overlay its map in the scan's geometry."""

    def runTest(self):
        # "Reload and Test" may run before anything was installed: install (asking
        # first) or say the test was skipped, never fail on a missing torch
        if not ensure_dependencies():
            self.delayDisplay("UAD's Python packages are not installed; the test was skipped")
            return
        slicer.mrmlScene.Clear(0)
        self.test_train_and_map()

    def test_train_and_map(self):
        import json
        import tempfile

        import numpy as np

        from SlicerUADLib.logic import TrainSettings, UADLogic
        from SlicerUADLib.scene import ijk_to_ras
        from uadcore.io import read_manifest
        from uadcore.synth import synthesize_cohort

        self.delayDisplay("Synthesising a tiny cohort")
        folder = tempfile.mkdtemp(prefix="uad-test-")
        manifest = synthesize_cohort(os.path.join(folder, "cohort"), healthy=4, unhealthy=1, seed=3, workers=1, progress=False)
        settings_file = os.path.join(folder, "tiny.json")
        with open(settings_file, "w") as handle:
            json.dump({"model_params": {"channels": [4, 8, 16, 32], "latent": 16}, "batch_size": 4, "workers": 1}, handle)
        uad = UADLogic(slicer.mrmlScene, lambda path: slicer.util.loadVolume(path), python=shutil.which("PythonSlicer") or sys.executable)
        self.delayDisplay("Training in a background process")
        job = uad.start_training(TrainSettings(data=manifest, out=os.path.join(folder, "run"), epochs=2, reinit_at="none",
                                               outlier_every=1, device="cpu", extra=["--config", settings_file]))
        job.wait(600)
        self.assertEqual(job.returncode, 0, job.error_message())
        scan = read_manifest(manifest)[-1].path
        shown = uad.load_with_map(scan, os.path.join(folder, "run"))
        self.assertTrue(np.allclose(ijk_to_ras(shown["map_node"]), ijk_to_ras(shown["volume_node"])))
        self.assertGreater(shown["score"], 0.0)
        self.delayDisplay("Test passed")
