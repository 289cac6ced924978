"""A plugin loaded by module name (tests put tests/plugins on sys.path)."""

from fixture_topk import FixtureRunner

from topkbench import Device, Implementation


class FixtureModuleTopk(Implementation):
    name = "fixture-module-topk"
    device = Device.CPU
    summary = "a fixture plugin loaded by module name"
    interface_version = 1

    def _prepare(self, logits, lengths, k):
        return FixtureRunner(logits, lengths, k)
