"""The public names are visible to type checkers (issue 10 item 6): mypy on a user's snippet, in a subprocess.

torch, Lightning and the other third-party packages are not followed (``follow_imports = skip``) so the run takes
seconds: what is checked is that the lazily exported names resolve to the real classes, not to ``Any``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MYPY = Path(sys.executable).parent / "mypy"

SNIPPET = """\
import crumpets_lightning.modules as modules
from crumpets_lightning.callbacks import Snapshot
from crumpets_lightning.data import AUGMENTATION_TRAIN, CrumpetsDataModule, TurboDataLoader
from crumpets_lightning.modules import CrumpetsModule

reveal_type(TurboDataLoader)
reveal_type(CrumpetsModule)
reveal_type(Snapshot)
reveal_type(AUGMENTATION_TRAIN)
size: str = CrumpetsDataModule(batch_size=4).batch_size  # line 10: an int
modules.CrumpetsModul  # line 11: a typo
"""

CONFIG = """\
[mypy]
ignore_missing_imports = True
follow_imports = silent
no_implicit_reexport = True
incremental = False
[mypy-torch.*,torchmetrics.*,lightning.*,lightning_utilities.*,pytorch_lightning.*,numpy.*,cv2.*,zmq.*,msgpack.*,jsonargparse.*,simplejpeg.*,tqdm.*,yaml.*]
follow_imports = skip
"""


def test_mypy_sees_the_real_types_of_the_lazily_exported_names(tmp_path: Path) -> None:
    (tmp_path / "snippet.py").write_text(SNIPPET)
    (tmp_path / "mypy.ini").write_text(CONFIG)
    env = {**os.environ, "MYPYPATH": str(REPO), "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [str(MYPY), "--config-file", "mypy.ini", "--no-error-summary", "snippet.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    out = result.stdout + result.stderr
    revealed = re.findall(r"snippet\.py:(\d+): note: Revealed type is \"(.*)\"", out)
    assert [line for line, _ in revealed] == ["6", "7", "8", "9"], out
    assert revealed[0][1].endswith("-> crumpets_lightning.data.loader.loader.TurboDataLoader"), out
    assert "batch_size: int" in revealed[0][1]
    assert revealed[1][1].endswith("-> crumpets_lightning.modules.module.CrumpetsModule"), out
    assert revealed[2][1].endswith("-> crumpets_lightning.callbacks.snapshot.Snapshot"), out
    assert revealed[3][1] == "crumpets_lightning.data.augment.rng.MixtureRNG", out
    errors = re.findall(r"snippet\.py:(\d+): error: (.*)", out)
    assert [line for line, _ in errors] == ["10", "11"], out
    assert 'expression has type "int", variable has type "str"' in errors[0][1]
    assert 'has no attribute "CrumpetsModul"' in errors[1][1]
    assert result.returncode == 1
