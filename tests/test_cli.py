"""The ``crumpets-lightning`` console script: dispatch, LightningCLI help/config, pack, gallery, a tiny fit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import sklearn.datasets
import yaml

from crumpets_lightning.cli import main
from crumpets_lightning.data.sources import MsgpackDataset
from crumpets_lightning.data.transport.codec import unpack_sample
from crumpets_lightning.demo import DemoNet
from crumpets_lightning.tools.demo import DEMO_CONFIG, build_digits_dataset

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).parent / "crumpets-lightning"
PHOTOS = Path(sklearn.datasets.__file__).parent / "images"


def run_script(*args: str, cwd: Path, timeout: float = 100.0) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_usage_and_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "pack SRC_DIR OUT.msgpack" in capsys.readouterr().out
    assert main([]) == 2
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_fit_help_lists_every_datamodule_argument_with_its_docstring(tmp_path: Path) -> None:
    result = run_script("fit", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for option in (
        "--data.train",
        "--data.batch_size",
        "--data.image_size",
        "--data.train_rng",
        "--data.worker",
        "--data.num_mini_batches",
        "--data.gpu_augmentation",
        "--model",
        "--trainer.max_epochs",
    ):
        assert option in result.stdout, option
    assert "samples per crumpets batch" in result.stdout  # docstring Args: lines become help text


def test_print_config_accepts_the_defaults_and_the_demo_config(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["fit", "--config", str(DEMO_CONFIG), "--print_config"]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code in (0, None)
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["data"]["batch_size"] > 0
    assert config["data"]["train_rng"]["class_path"].endswith("MixtureRNG")
    assert config["model"]["class_path"] == "crumpets_lightning.demo.DemoNet"

    with pytest.raises(SystemExit):
        main(["fit", "--model", "crumpets_lightning.demo.DemoNet", "--print_config"])
    defaults = yaml.safe_load(capsys.readouterr().out)
    assert defaults["data"]["train_rng"] is None  # None means the AUGMENTATION_TRAIN preset
    assert defaults["data"]["image_size"] == [224, 224]


def test_examples_config_is_the_packaged_demo_config() -> None:
    assert (REPO / "examples" / "configs" / "demo.yaml").read_text() == DEMO_CONFIG.read_text()


def test_pack_turns_an_image_folder_into_a_msgpack_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    files: dict[str, tuple[bytes, int]] = {}
    for label, name in enumerate(["cat", "elephant"]):
        (tmp_path / "set" / name).mkdir(parents=True)
        for i in range(3):
            ok, data = cv2.imencode(".png", rng.integers(0, 256, (8, 10, 3), dtype=np.uint8))
            assert ok
            (tmp_path / "set" / name / f"{i}.png").write_bytes(data.tobytes())
            files[f"{name}/{i}.png"] = (data.tobytes(), label)
    out = tmp_path / "set.msgpack"
    assert main(["pack", str(tmp_path / "set"), str(out), "--quiet"]) == 0
    assert "wrote 6 samples" in capsys.readouterr().out
    dataset = MsgpackDataset(out)
    assert len(dataset) == 6
    samples = [unpack_sample(dataset[i]) for i in range(6)]
    assert {s["key"]: (bytes(s["image"]), s["label"]) for s in samples} == files


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith("INFO: ")]  # Lightning's "Seed set to 0"
    assert len(lines) == 1 and lines[0].startswith("crumpets-lightning "), err  # one line, no traceback
    assert "Traceback" not in err
    return lines[0]


def test_pack_reports_a_missing_folder_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pack", str(tmp_path / "nowhere"), str(tmp_path / "out.msgpack"), "--quiet"]) == 2
    err = _one_line_error(capsys)
    assert "nowhere" in err and "not a directory" in err and "SRC_DIR/class_name/*.jpg" in err
    assert not (tmp_path / "out.msgpack").exists()


def test_console_script_error_is_one_line_and_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = run_script("pack", "/nonexistent", "out.msgpack", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "'/nonexistent' is not a directory" in result.stderr and "--debug" in result.stderr
    debug = run_script("pack", "/nonexistent", "out.msgpack", "--debug", cwd=tmp_path)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "FileNotFoundError" in debug.stderr


def test_gallery_reports_a_missing_image_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gallery", str(tmp_path / "nope.jpg"), "-o", str(tmp_path / "g.png")]) == 2
    err = _one_line_error(capsys)
    assert "nope.jpg" in err and "is not a file" in err and "JPEG or PNG" in err


def test_bad_command_line_value_is_one_line_naming_the_option_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fit", "--model", "DemoNet", "--data.batch_size=abc"]) == 2
    err = _one_line_error(capsys)
    assert "data.batch_size" in err and "abc" in err and "crumpets-lightning fit --help" in err


def test_unknown_model_is_one_line_naming_the_models_there_are(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fit", "--model", "NoSuchNet"]) == 2
    err = _one_line_error(capsys)
    assert "NoSuchNet" in err and "import path (my_package.MyModel)" in err
    assert "DemoNet" in err and "CrumpetsModule" in err


def test_bad_yaml_value_reaching_the_datamodule_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("seed_everything: false\nmodel:\n  class_path: DemoNet\ndata:\n  batch_size: 0\n")
    assert main(["fit", "--config", str(config), f"--trainer.default_root_dir={tmp_path}"]) == 2
    err = _one_line_error(capsys)
    assert "ValueError" in err and "`batch_size`" in err and "positive int" in err and "got 0" in err


def test_bad_yaml_value_reaching_the_module_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        "seed_everything: false\nmodel:\n  class_path: DemoNet\n  init_args:\n    scheduler_interval: weekly\n"
    )
    assert main(["fit", "--config", str(config), f"--trainer.default_root_dir={tmp_path}"]) == 2
    err = _one_line_error(capsys)
    assert "scheduler_interval" in err and "weekly" in err and "'step'" in err


def test_short_class_names_resolve_to_the_package_classes(capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "fit", "--model", "CrumpetsModule", "--model.loss", "CrossEntropyLoss", "--model.metric=AccuracyMetric",
        "--model.scheduler", "PolyPolicy", "--data.train_rng", "MixtureRNG", "--data.worker", "ClassificationWorker",
        "--print_config",
    ]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code in (0, None)
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["model"]["class_path"] == "crumpets_lightning.modules.module.CrumpetsModule"
    init = config["model"]["init_args"]
    # CrossEntropyLoss exists in torch.nn too: on this command line the package's class wins
    assert init["loss"]["class_path"] == "crumpets_lightning.modules.losses.CrossEntropyLoss"
    assert init["metric"]["class_path"] == "crumpets_lightning.modules.metrics.AccuracyMetric"
    assert init["scheduler"]["class_path"].endswith("PolyPolicy")
    assert config["data"]["train_rng"]["class_path"] == "crumpets_lightning.data.augment.rng.MixtureRNG"
    assert config["data"]["worker"]["class_path"] == "crumpets_lightning.data.workers.image.ClassificationWorker"


def test_fit_help_shows_the_presets_that_none_defaults_stand_for(tmp_path: Path) -> None:
    from crumpets_lightning.data import AUGMENTATION_TRAIN, INPUT_PARAMS_VAL

    result = run_script("fit", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "default null means the AUGMENTATION_TRAIN preset = " + " ".join(repr(AUGMENTATION_TRAIN).split()) in text
    assert "default null means the INPUT_PARAMS_VAL preset = " + " ".join(repr(INPUT_PARAMS_VAL).split()) in text


@pytest.mark.parametrize("command", ["demo", "bench"])
def test_demo_and_bench_without_scikit_learn_name_the_extra(command: str, tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['sklearn'] = None  # as if scikit-learn were not installed\n"
        "from crumpets_lightning.cli import main\n"
        f"sys.exit(main([{command!r}, '--quick']))\n"
    )
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=100, check=False
    )
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "pip install 'crumpets-lightning[demo]'" in result.stderr and "scikit-learn" in result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing started, nothing written


def test_gallery_writes_a_png_of_a_real_photo(tmp_path: Path) -> None:
    out = tmp_path / "gallery.png"
    assert main(["gallery", str(PHOTOS / "china.jpg"), "-o", str(out), "--size", "64"]) == 0
    image = cv2.imread(str(out))
    assert image is not None and image.shape[0] >= 64 and image.shape[1] >= 4 * 64


def test_bench_is_dispatched_to_the_benchmark(monkeypatch: pytest.MonkeyPatch) -> None:
    import crumpets_lightning.tools.bench

    calls: list[list[str]] = []
    monkeypatch.setattr(crumpets_lightning.tools.bench, "main", lambda argv: calls.append(argv) or 0)
    assert main(["bench", "--images", "8"]) == 0
    assert calls == [["--images", "8"]]


def test_fit_with_a_short_model_name_through_the_console_script(tmp_path: Path) -> None:
    data = build_digits_dataset(tmp_path / "data", image_size=16, limit=60)
    out = tmp_path / "run"
    result = run_script(
        "fit",
        "--config", str(DEMO_CONFIG),
        "--model", "DemoNet",
        "--model.width", "8",
        f"--data.train={data.train}",
        f"--data.val={data.held_out}",
        "--data.nworkers=1",
        "--data.batch_size=16",
        "--data.image_size=[16, 16]",
        "--trainer.max_epochs=1",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={out}",
        f"--trainer.logger.init_args.save_dir={out / 'logs'}",
        f"--trainer.callbacks.outdir={out / 'snapshots'}",
        "--trainer.callbacks.snapshot_interval=1",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert sorted(p.name for p in (out / "snapshots").iterdir()) == ["epoch_00.ckpt", "last.ckpt"]
    metrics = list((out / "logs").rglob("metrics.jsonl"))
    assert metrics and "val/accuracy" in metrics[0].read_text()


class BrokenNet(DemoNet):
    """A model with a bug in ``training_step``: the console script must keep its traceback."""

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        raise RuntimeError("boom in training_step")


def _fit_args(tmp_path: Path, model: str, *extra: str) -> list[str]:
    data = build_digits_dataset(tmp_path / "data", image_size=16, limit=60)
    return [
        "fit", "--model", model, "--model.width", "4", f"--data.train={data.train}", "--data.nworkers=1",
        "--data.batch_size=8", "--data.image_size=16", "--data.channels=1", "--trainer.max_epochs=1",
        "--trainer.logger=false", "--trainer.enable_checkpointing=false", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false", f"--trainer.default_root_dir={tmp_path}", *extra,
    ]  # fmt: skip


def test_settings_that_do_not_fit_the_run_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # found only when fit starts: the DataModule's ConfigurationError
    assert main(_fit_args(tmp_path, "DemoNet", "--data.num_mini_batches=2")) == 2
    err = _one_line_error(capsys)
    assert "ConfigurationError" in err and "accumulate_grad_batches=2" in err


def test_an_error_while_training_keeps_its_traceback(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom in training_step"):
        main(_fit_args(tmp_path, f"{__name__}.BrokenNet"))
