"""A plugin whose unavailable_reason() raises: it is unavailable, the others are not affected."""

from topkbench import Device, Implementation


class Raises(Implementation):
    name = "fixture-unavailable-raises"
    device = Device.CPU
    summary = "unavailable_reason raises"
    interface_version = 1

    def unavailable_reason(self):
        raise OSError("driver probe failed")

    def _prepare(self, logits, lengths, k):
        raise NotImplementedError
