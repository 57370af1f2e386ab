"""Every module imports on its own, first, in a fresh interpreter (no import cycles)."""

import subprocess
import sys

SCRIPT = r"""
import importlib, pkgutil, sys
import uadcore, SlicerUADLib
names = [m.name for package in (uadcore, SlicerUADLib) for m in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]
failed = []
for name in names:
    for loaded in [n for n in sys.modules if n.split(".")[0] in ("uadcore", "SlicerUADLib")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as error:
        failed.append(f"{name}: {type(error).__name__}: {error}")
print("\n".join(failed))
print(len(names), "modules")
"""


def test_every_module_imports_first():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[-1].endswith("modules") and int(lines[-1].split()[0]) > 20
    assert lines[:-1] == [], "\n".join(lines[:-1])


BOUNDARY = r"""
import importlib, pkgutil, sys
import uadcore
for module in pkgutil.walk_packages(uadcore.__path__, "uadcore."):
    importlib.import_module(module.name)
print(" ".join(sorted({n.split(".")[0] for n in sys.modules} & {"PyQt5", "qt", "slicer", "ctk", "vtk", "SlicerUADLib"})))
"""


def test_the_engine_never_imports_qt_slicer_or_the_slicer_module():
    """The promise of uadcore/__init__.py: every uadcore module imported, and none of
    Qt, slicer, ctk, VTK or SlicerUADLib came with it (`uad gui` imports those only
    when it runs)."""
    done = subprocess.run([sys.executable, "-c", BOUNDARY], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def _package_imports() -> dict:
    """{uadcore package or top-level module: the others it imports}, read from the
    source (every import statement, also those inside functions)."""
    import ast
    import pathlib

    import uadcore

    root = pathlib.Path(uadcore.__file__).parent
    graph = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        here = parts[0] if parts[0] != "__init__" else "uadcore"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            for name in names:
                target = name.split(".")
                if target[0] == "uadcore" and len(target) > 1 and target[1] != here:
                    graph.setdefault(here, set()).add(target[1])
    return graph


def test_layers_only_point_down():
    """score never imports train; no two uadcore packages import each other, directly
    or through others (the modules within one package may)."""
    graph = _package_imports()
    assert "train" not in graph.get("score", set())
    assert graph["score"] and graph["train"]  # the reading found imports at all

    def reachable(start):
        seen, todo = set(), [start]
        while todo:
            for following in graph.get(todo.pop(), ()):
                if following not in seen:
                    seen.add(following)
                    todo.append(following)
        return seen

    cycles = sorted(package for package in graph if package in reachable(package))
    assert cycles == [], f"packages in an import cycle: {cycles}"


# the preparation, lowest first: each module imports only those before it
PREPARATION_LINE = ("resample", "warp", "template", "itk", "bias", "skullstrip", "register", "intensity", "memory", "prepared", "cache",
                    "brain", "preset", "brain3d", "slices2d", "patches2d", "__init__", "dataset")


def test_the_preparation_is_a_line():
    """No preparation module imports one above it (also not inside a function), so
    none of them can be in a cycle, and a new step has one place on the line."""
    import ast
    import pathlib

    import uadcore.preprocess

    root = pathlib.Path(uadcore.preprocess.__file__).parent
    assert sorted(PREPARATION_LINE) == sorted(p.stem for p in root.glob("*.py")), "a module missing from PREPARATION_LINE"
    upward = []
    for level, name in enumerate(PREPARATION_LINE):
        for node in ast.walk(ast.parse((root / f"{name}.py").read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("uadcore.preprocess"):
                targets = [node.module.split(".")[2]] if node.module != "uadcore.preprocess" else \
                    [a.name if a.name in PREPARATION_LINE else "__init__" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name.split(".")[2] for a in node.names if a.name.startswith("uadcore.preprocess.")]
            else:
                continue
            upward += [f"{name} imports {t}" for t in targets if PREPARATION_LINE.index(t) >= level]
    assert upward == []


LIBRARIES = ("torch", "monai", "SimpleITK", "nibabel", "scipy", "numpy", "deepbet", "nilearn")
LOADED = r"""
import sys
{run}
print("loaded:", *sorted({{m.split(".")[0] for m in sys.modules}} & set({libraries!r})))
"""


def _libraries_loaded_by(run: str) -> set[str]:
    done = subprocess.run([sys.executable, "-c", LOADED.format(run=run, libraries=LIBRARIES)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return set(done.stdout.strip().splitlines()[-1].split()[1:])


def test_the_cli_answers_help_version_and_a_mistyped_command_before_any_library_loads():
    """`uad --help`, `--version`, no command and a mistyped one are parsed with only
    the commands' one-line helps: no torch, MONAI, SimpleITK or even numpy (seconds
    of start-up on a busy machine; benchmarks/cli_start measures them)."""
    for argv in (["--version"], ["--help"], [], ["trian", "--data", "x"]):
        run = f"from uadcore.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass"
        assert _libraries_loaded_by(run) == set(), argv


def test_a_commands_usage_error_loads_no_torch_and_its_help_no_monai():
    """A command's usage error (`uad train --epochs x`) is parsed before torch loads:
    the choices and help texts that come from the model registry are read only when
    a value is checked or a help printed (`uadcore.cli.lazy`). Its `--help` may load
    torch for them, never MONAI (built with a network), SimpleITK or nibabel."""
    from uadcore.cli import COMMANDS

    for command in COMMANDS:
        run = f"from uadcore.cli import main\ntry:\n    main([{command!r}, '--no-such-option'])\nexcept SystemExit:\n    pass"
        assert _libraries_loaded_by(run) <= {"numpy", "scipy"}, command
        run = f"from uadcore.cli import main\ntry:\n    main([{command!r}, '--help'])\nexcept SystemExit:\n    pass"
        assert _libraries_loaded_by(run) <= {"torch", "numpy", "scipy"}, command
