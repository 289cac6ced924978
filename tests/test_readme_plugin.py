"""The plugin example runs verbatim: the code block after ``<!-- plugin-example: my_topk.py -->``
and each line of the block after ``<!-- plugin-example-commands -->``.

The example lives in docs/plugins.md and in the README's "Bring your own kernel" section, the same
blocks in both. SOURCE is the file the tests run it from: docs/plugins.md until the README carries
the section, README.md after (then the docs copy is checked against it).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from topkbench.config import parse_config
from topkbench.exactness import check_topk
from topkbench.impls import registry
from topkbench.plugins import ENV_VAR, load_plugins
from topkbench.schema import Status
from topkbench.store import read_results
from topkbench.verify import verify

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "README.md"
CODE_MARKER = "<!-- plugin-example: my_topk.py -->"
COMMANDS_MARKER = "<!-- plugin-example-commands -->"


def _block(text: str, marker: str, language: str) -> str:
    match = re.search(re.escape(marker) + r"\n```" + language + r"\n(.*?)\n```\n", text, re.S)
    assert match, f"no ```{language} block right after {marker} in {SOURCE.name}"
    return match.group(1) + "\n"


def example() -> tuple[str, list[str]]:
    text = SOURCE.read_text(encoding="utf-8")
    assert text.count(CODE_MARKER) == 1 and text.count(COMMANDS_MARKER) == 1
    code = _block(text, CODE_MARKER, "python")
    commands = [line for line in _block(text, COMMANDS_MARKER, "bash").splitlines() if line.strip()]
    return code, commands


pytestmark = pytest.mark.usefixtures("fresh_plugin_registry")


@pytest.fixture
def plugin_file(tmp_path) -> Path:
    path = tmp_path / "my_topk.py"
    path.write_text(example()[0], encoding="utf-8")
    return path


def test_example_is_minimal_and_names_its_implementation():
    code, commands = example()
    assert len(code.splitlines()) <= 35
    assert 'name, device, interface_version = "my-topk", Device.CPU, 1' in code
    assert commands and all(c.startswith("topkbench ") and "--plugin my_topk.py" in c for c in commands)
    assert any(c.startswith("topkbench sweep ") and "--impl my-topk" in c for c in commands)


def test_docs_carry_the_same_example_as_the_source():
    # Meaningful once SOURCE is README.md: the two copies of the example must not drift apart.
    docs = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    code, commands = example()
    assert _block(docs, CODE_MARKER, "python") == code
    assert _block(docs, COMMANDS_MARKER, "bash") == "\n".join(commands) + "\n"


def test_example_loads_and_is_exact_over_the_adversarial_distributions(plugin_file):
    (loaded,) = load_plugins([str(plugin_file)])
    assert loaded.name == "my-topk" and "my-topk" in registry.available()
    assert registry.provenance_of("my-topk").source == f"path:{plugin_file}"
    cfg = parse_config({"name": "readme-plugin", "implementations": ["my-topk"],
                        "axes": {"rows": [1, 3], "seq_len": [1, 300], "k": [1, 7, 300],
                                 "length_mode": ["fixed", "ragged"],
                                 "distribution": ["normal", "relu_plateau", "constant", "tie_heavy", "specials"]}},
                       "readme-plugin")
    results = verify(cfg, ["my-topk"]).results
    assert results and all(r.status is Status.OK for r in results), [r.detail for r in results if r.detail][:3]


def test_example_runner_writes_its_output_and_rereads_its_inputs(plugin_file):
    load_plugins([str(plugin_file)])
    logits = torch.randn(4, 200)
    lengths = torch.tensor([200, 3, 50, 0], dtype=torch.int32)
    runner = registry.get("my-topk").prepare(logits, lengths, 8)
    runner.output.fill_(0x7F7F7F7F)
    runner.run()
    assert check_topk(logits, lengths, 8, runner.result()).ok
    logits.copy_(torch.randn(4, 200))
    lengths.copy_(torch.tensor([7, 200, 9, 100], dtype=torch.int32))
    runner.run()
    assert check_topk(logits, lengths, 8, runner.result()).ok


@pytest.mark.slow
def test_example_commands_run_verbatim(plugin_file):
    """Each command of the block, with `topkbench` run as `python -m topkbench`, in a folder that
    holds my_topk.py: exit 0, and the sweep's rows name the plugin and its source."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    env.pop(ENV_VAR, None)
    for command in example()[1]:
        argv = shlex.split(command)
        proc = subprocess.run([sys.executable, "-m", "topkbench", *argv[1:]], cwd=plugin_file.parent, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    frame = read_results([plugin_file.parent / "results"])
    mine = frame[frame["impl"] == "my-topk"]
    measurable = mine["k"] < mine["seq_len"]  # k >= seq_len selects everything: stored unsupported
    assert measurable.any() and set(mine[measurable]["status"]) == {"ok"}
    assert set(mine[~measurable]["status"]) <= {"unsupported"}
    assert set(mine["impl_source"]) == {f"path:{plugin_file}"}
    assert "torch-cpu" in set(frame["impl"])
