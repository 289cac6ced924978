"""One of two plugins that take the same name."""

from topkbench import Device, Implementation


class Clash(Implementation):
    name = "fixture-clash"
    device = Device.CPU
    summary = "clash b"
    interface_version = 1

    def _prepare(self, logits, lengths, k):
        raise NotImplementedError
