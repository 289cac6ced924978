"""The module an installed distribution's entry point names."""

from topkbench import Device, Implementation
from topkbench.impls.library import TorchCpu


class FixtureEntryPointTopk(Implementation):
    name = "fixture-ep-topk"
    device = Device.CPU
    summary = "a fixture plugin found through an entry point"
    interface_version = 1

    def _prepare(self, logits, lengths, k):
        return TorchCpu()._prepare(logits, lengths, k)
