"""Every code block of the README runs as written (issue 13 item 7).

Fixture, as the README says: the Python example trains on the digits that ``make demo`` writes to
``demo_output/``; the test builds the same files (400 digits instead of 1797, to keep it short) with
:func:`crumpets_lightning.tools.demo.build_digits_dataset` in a temporary directory and runs the block there,
as a script in a subprocess, once as written and once with ``strategy="ddp_spawn", devices=2`` (which pickles
the module and imports the script again in each process).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from crumpets_lightning.cli import main
from crumpets_lightning.data import open_source
from crumpets_lightning.tools.demo import build_digits_dataset

README = Path(__file__).resolve().parents[1] / "README.md"
TEXT = README.read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", TEXT, flags=re.S | re.M)


PYTHON_BLOCKS = _blocks("python")
SINGLE_PROCESS = 'trainer = L.Trainer(max_epochs=2, accelerator="cpu")'
DDP_SPAWN = 'trainer = L.Trainer(max_epochs=2, accelerator="cpu", strategy="ddp_spawn", devices=2)'


def test_quick_start_is_exactly_two_commands() -> None:
    section = TEXT.split("## Quick start", 1)[1].split("##", 1)[0]
    (block,) = re.findall(r"^```\n(.*?)^```$", section, flags=re.S | re.M)
    assert [line.split("#")[0].strip() for line in block.splitlines()] == ["make demo", "make test"]


@pytest.fixture
def demo_dir(tmp_path: Path) -> Path:
    build_digits_dataset(tmp_path / "demo_output", image_size=32, limit=400)
    return tmp_path


def _run_block(code: str, cwd: Path) -> str:
    script = cwd / "readme_example.py"
    script.write_text(code)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(script)], cwd=cwd, env=env, capture_output=True, text=True, timeout=110, check=False
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    script.unlink()
    return result.stdout


def _accuracy(stdout: str) -> float:
    (value,) = re.findall(r"^held-out accuracy: ([0-9.]+)$", stdout, flags=re.M)
    return float(value)


#: The training example (the one block that trains); the other Python blocks are shorter recipes.
(TRAINING_BLOCK,) = [code for code in PYTHON_BLOCKS if SINGLE_PROCESS in code]
RECIPES = [code for code in PYTHON_BLOCKS if SINGLE_PROCESS not in code]


def test_the_readme_training_example_runs_as_written(demo_dir: Path) -> None:
    code = TRAINING_BLOCK
    assert "scheduler=partial(PolyPolicy" in code  # picklable, unlike a lambda
    accuracy = _accuracy(_run_block(code, demo_dir))
    assert 0.2 < accuracy <= 1.0  # 2 epochs of 320 digits: well above chance (0.1)


@pytest.mark.slow
def test_the_python_example_runs_under_ddp_spawn(demo_dir: Path) -> None:
    accuracy = _accuracy(_run_block(TRAINING_BLOCK.replace(SINGLE_PROCESS, DDP_SPAWN), demo_dir))
    assert 0.2 < accuracy <= 1.0


@pytest.mark.parametrize("index", range(len(RECIPES)))
def test_the_other_python_blocks_run_as_written(index: int, demo_dir: Path) -> None:
    assert _run_block(RECIPES[index], demo_dir).strip()


def test_the_shards_recipe_counts_every_training_digit(demo_dir: Path) -> None:
    (code,) = [code for code in RECIPES if "shuffle_window" in code]
    printed = _run_block(code, demo_dir)
    (samples,) = re.findall(r"^(\d+) samples in 4 shards", printed, flags=re.M)
    assert int(samples) == len(open_source(str(demo_dir / "demo_output" / "digits_train.msgpack")))


DEMO_CONFIG = Path(__file__).resolve().parents[1] / "crumpets_lightning" / "configs" / "demo.yaml"


@pytest.mark.parametrize("index", range(len(_blocks("yaml"))))
def test_yaml_blocks_are_valid_configs(index: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    block = yaml.safe_load(_blocks("yaml")[index])
    config = tmp_path / "config.yaml"
    config.write_text(_blocks("yaml")[index])
    # a block without a model is a fragment shown "on top of" a whole config: parse it over the demo's
    configs = ["--config", str(config)] if "model" in block else ["--config", str(DEMO_CONFIG), "--config", str(config)]
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *configs, "--print_config"])
    assert exit_info.value.code in (0, None), capsys.readouterr().err
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"].endswith(".DemoNet")
    for key, value in block.get("data", {}).items():
        if not isinstance(value, dict):  # class configs come back with their defaults filled in
            assert printed["data"][key] == value


def _porting_rows() -> list[tuple[str, str]]:
    section = TEXT.split("## Porting crumpets code: the imports", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (.+?) \| (.+?) \|$", section, flags=re.M)
    return [row for row in rows if not set(row[0]) <= {"-"} and row[0] != "crumpets import"]


def test_every_import_in_the_porting_table_works() -> None:
    rows = _porting_rows()
    assert len(rows) >= 15
    statements = [
        code
        for _, new in rows
        for code in re.findall(r"`([^`]+)`", new)
        if code.startswith(("from crumpets_lightning", "import "))
    ]
    assert len(statements) >= 15
    for statement in statements:
        exec(statement, {})  # raises if a name is missing
    crumpets_names = {name for old, _ in rows for name in re.findall(r"import ([\w, ]+)`", old)}
    assert crumpets_names, rows


@pytest.mark.parametrize("name", ["Trainer", "resume", "ParallelApply"])
def test_the_names_without_a_port_in_the_table_raise_a_pointing_import_error(name: str) -> None:
    rows = [new for old, new in _porting_rows() if name in old]
    assert rows, name
    with pytest.raises(ImportError, match="has no direct port"):
        exec(f"from crumpets_lightning.modules import {name}", {})
