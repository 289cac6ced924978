"""A well-formed path plugin with two implementations and a version."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from fixture_topk import FixtureRunner  # noqa: E402

from topkbench import Device, Implementation  # noqa: E402

__version__ = "2.5"
#: Counts executions of this file: loading it again must not run it again.
LOADS = [1]


class _Base(Implementation):  # an intermediate base without a name: not an implementation
    device = Device.CPU
    interface_version = 1

    def _prepare(self, logits, lengths, k):
        return FixtureRunner(logits, lengths, k)


class FixturePathTopk(_Base):
    name = "fixture-path-topk"
    summary = "a fixture plugin loaded by path"


class FixturePathTopkTwo(_Base):
    name = "fixture-path-topk-two"
    summary = "a second implementation in the same plugin file"
    max_k = 64


_unused = torch  # the plugin imports torch like a real one would
