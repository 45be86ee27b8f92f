"""The public names users import (SPEC section 2) exist and resolve, so none disappears by accident."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

SPEC_NAMES = {
    "crumpets_lightning.data": [
        "TurboDataLoader", "TorchTurboDataLoader", "Worker", "BufferWorker", "ImageWorker", "ClassificationWorker",
        "FCNWorker", "SegmentationWorker", "SaliencyWorker", "decode_image", "randomize_image", "rotate_and_resize",
        "make_transform", "calc_scale_ratio", "add_gamma", "add_noise_rgb", "add_noise_other", "add_blur", "RNG",
        "MixtureRNG", "NoRNG", "human2gamma", "AUGMENTATION_TRAIN", "INPUT_PARAMS_VAL", "MsgpackDataset",
        "ImageFolderDataset", "write_msgpack", "pack_sample", "unpack_sample", "CrumpetsDataModule",
        "SampleError", "WorkerError", "WorkerDiedError",
    ],
    "crumpets_lightning.modules": [
        "CrumpetsModule", "CrossEntropyLoss", "L1Loss", "LabelSmoothing", "MSELoss", "NLLLoss", "NSSLoss",
        "AccuracyMetric", "AverageMetric", "CombinedMetric", "ConfusionMatrix", "MSELossMetric", "MSEMetric",
        "NSSMetric", "NoopMetric", "NoopPolicy", "PolyPolicy", "SigmoidPolicy", "RampPolicy", "ReduceLROnPlateau",
        "Randomizer", "Normalize", "Unpacker",
    ],
    "crumpets_lightning.callbacks": ["CrumpetsHooks", "Snapshot", "JSONLogger", "DataWaitMonitor", "load_snapshot"],
}  # fmt: skip


@pytest.mark.parametrize("package", sorted(SPEC_NAMES))
def test_spec_names_are_exported_and_resolve(package):
    module = importlib.import_module(package)
    missing = [name for name in SPEC_NAMES[package] if name not in module.__all__]
    assert not missing, f"{package}.__all__ lacks {missing}"
    for name in module.__all__:
        assert getattr(module, name) is not None, name


def test_unknown_name_raises_attribute_error():
    data = importlib.import_module("crumpets_lightning.data")
    with pytest.raises(AttributeError, match="NotAThing"):
        data.NotAThing  # noqa: B018


def test_lightning_bases():
    import lightning.pytorch as pl
    import torchmetrics

    from crumpets_lightning.callbacks import JSONLogger, Snapshot
    from crumpets_lightning.data import CrumpetsDataModule
    from crumpets_lightning.modules import AccuracyMetric, CrumpetsModule, PolyPolicy

    assert issubclass(CrumpetsDataModule, pl.LightningDataModule)
    assert issubclass(CrumpetsModule, pl.LightningModule)
    assert issubclass(Snapshot, pl.callbacks.ModelCheckpoint)
    assert issubclass(JSONLogger, pl.loggers.Logger)
    assert issubclass(AccuracyMetric, torchmetrics.Metric)
    import torch

    assert issubclass(PolyPolicy, torch.optim.lr_scheduler.LRScheduler)


# -- lazy exports: what type checkers see matches what runs --------------------------------------------------------

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "crumpets_lightning"


@pytest.mark.parametrize("package", sorted(SPEC_NAMES))
def test_type_checking_imports_match_the_lazy_map(package):
    module = importlib.import_module(package)
    assert sorted(module.__all__) == sorted(module._NAMES)
    tree = ast.parse(Path(module.__file__).read_text())
    (block,) = [node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"]
    imported = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom), ast.unparse(node)
        for alias in node.names:
            imported[alias.asname or alias.name] = node.module.removeprefix(package + ".")
    assert imported == module._NAMES


# -- crumpets names with no direct port: the error names the replacement ----------------------------------------


@pytest.mark.parametrize(
    ("name", "replacement"),
    [
        ("Trainer", ["lightning.Trainer", "CrumpetsModule"]),
        ("ParallelApply", ["devices=N"]),
        ("resume", ["ckpt_path=PATH", "load_snapshot"]),
        ("save", ["Snapshot", "save_checkpoint"]),
        ("is_cpu_only", ["accelerator=", "devices="]),
        ("SharedTensorManager", ["shared_memory="]),
        ("Metric", ["torchmetrics.Metric", "compute()"]),
    ],
)
def test_crumpets_names_without_a_port_name_their_replacement(name, replacement):
    with pytest.raises(ImportError, match=rf"^{name} \(crumpets\) has no direct port") as error:
        exec(f"from crumpets_lightning.modules import {name}", {})
    for words in replacement:
        assert words in str(error.value)
    modules = importlib.import_module("crumpets_lightning.modules")
    with pytest.raises(ImportError, match="has no direct port"):
        getattr(modules, name)
    assert name not in modules.__all__


@pytest.mark.parametrize(
    ("name", "replacement"),
    [
        ("make_bufferspec", ["make_buffer_spec"]),
        ("BufferManager", ["shared_memory=N"]),
        ("DummyBufferManager", ["shared_memory=False"]),
        ("Consumer", ["iterate the loader", "CrumpetsDataModule"]),
        ("Slicer", ["length=N"]),
    ],
)
def test_crumpets_data_names_without_a_port_name_their_replacement(name, replacement):
    with pytest.raises(ImportError, match=rf"^{name} \(crumpets\) has no direct port in crumpets_lightning.data"):
        exec(f"from crumpets_lightning.data import {name}", {})
    data = importlib.import_module("crumpets_lightning.data")
    with pytest.raises(ImportError) as error:
        getattr(data, name)
    assert all(words in str(error.value) for words in replacement)
    assert name not in data.__all__


# -- import structure: no cycles, the core never imports the tools -----------------------------------------------


def _imports() -> dict[str, set[str]]:
    """Module -> package modules it imports anywhere (also inside functions; not under ``if TYPE_CHECKING``)."""
    modules = {}
    for path in PACKAGE_DIR.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)

    def known(name):
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for name, (path, is_package) in modules.items():
        found = set()
        stack = list(ast.parse(path.read_text()).body)
        while stack:
            node = stack.pop()
            if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
                stack.extend(node.orelse)
                continue
            if isinstance(node, ast.Import):
                found.update(known(alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                found.update(known(f"{base}.{alias.name}") or known(base) for alias in node.names)
            stack.extend(ast.iter_child_nodes(node))
        graph[name] = {target for target in found if target and target != name}
    return graph


def test_no_import_cycles_in_the_package():
    graph = _imports()
    state: dict[str, int] = {}
    cycles = []

    def visit(node, path):
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(" -> ".join(cycle) for cycle in cycles)


@pytest.mark.parametrize(
    ("importer", "forbidden"),
    [
        ("crumpets_lightning.data", ["modules", "callbacks", "cli", "tools", "demo", "gallery"]),
        ("crumpets_lightning.modules", ["callbacks", "cli", "tools", "demo", "gallery"]),
        ("crumpets_lightning.callbacks", ["cli", "tools", "demo", "gallery"]),
        ("crumpets_lightning", ["cli"]),
    ],
)
def test_dependency_rules(importer, forbidden):
    forbidden = tuple(f"crumpets_lightning.{name}" for name in forbidden)
    broken = [
        f"{name} imports {target}"
        for name, targets in _imports().items()
        if name.startswith(importer) and name != "crumpets_lightning.cli"
        for target in targets
        if target.startswith(forbidden) and not (target == "crumpets_lightning.cli" and name == target)
    ]
    assert not broken


def test_the_core_and_the_cli_import_without_the_optional_packages():
    code = (
        "import importlib, pkgutil, sys\n"
        "sys.modules['sklearn'] = sys.modules['msgpack_numpy'] = None  # as if the extras were not installed\n"
        "import crumpets_lightning\n"
        "for package in ('data', 'modules', 'callbacks'):\n"
        "    root = importlib.import_module('crumpets_lightning.' + package)\n"
        "    for info in pkgutil.walk_packages(root.__path__, root.__name__ + '.'):\n"
        "        importlib.import_module(info.name)\n"
        "import crumpets_lightning.cli, crumpets_lightning.demo, crumpets_lightning.gallery\n"
        "print(sorted(name for name in sys.modules if name.startswith('crumpets_lightning.tools')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=100, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]"  # the tools are imported only when a subcommand runs


def test_scikit_learn_and_msgpack_numpy_are_extras_that_make_installs_after_the_torch_pin():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    root = PACKAGE_DIR.parent
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    required = " ".join(project["dependencies"])
    assert "scikit-learn" not in required and "msgpack-numpy" not in required
    extras = project["optional-dependencies"]
    assert any(dep.startswith("scikit-learn") for dep in extras["demo"])
    assert any(dep.startswith("msgpack-numpy") for dep in extras["dev"])
    recipe = (root / "Makefile").read_text()
    torch_line = recipe.index('pip install -q "$(TORCH_PIN)"')
    assert torch_line < recipe.index('pip install -q -e ".[dev,demo]"')
    assert "TORCH_PIN ?= torch==" in recipe
