"""One file, one broken class per way a plugin can break the interface (each is reported)."""

from topkbench import INTERFACE_VERSION, Device, Implementation


class _Ok(Implementation):
    device = Device.CPU
    summary = "broken fixture"
    interface_version = 1

    def _prepare(self, logits, lengths, k):
        raise NotImplementedError


class NotAnImplementation:
    name = "fixture-not-a-subclass"


class NoName(_Ok):
    pass


class BadName(_Ok):
    name = "has space"


class WrongDevice(_Ok):
    name = "fixture-wrong-device"
    device = "gpu"


class TooNew(_Ok):
    name = "fixture-too-new"
    interface_version = INTERFACE_VERSION + 1


class Abstract(Implementation):
    name = "fixture-abstract"
    device = Device.CPU
    summary = "no _prepare"
    interface_version = 1


class CtorFails(_Ok):
    name = "fixture-ctor-fails"

    def __init__(self):
        raise RuntimeError("no GPU context")


class BuiltinName(_Ok):
    name = "numpy"


class Fine(_Ok):
    name = "fixture-fine-beside-broken"


IMPLEMENTATIONS = [NotAnImplementation, NoName, BadName, WrongDevice, TooNew, Abstract, CtorFails,
                   BuiltinName, Fine]
