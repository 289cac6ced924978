"""``topkbench list``: the implementations usable here, the device, and versions."""

from __future__ import annotations

import typer
from rich.markup import escape

from topkbench import __version__, dispatch
from topkbench.config import bundled_configs
from topkbench.impls import registry
from topkbench.plugins.option import PluginOption, load_cli_plugins
from topkbench.provenance import device_info, git_state
from topkbench.terminal import console, simple_table


def list_command(plugin: PluginOption = None) -> None:
    """Show every implementation (usable here or why not), the device and versions."""
    load_cli_plugins(plugin)
    rows = []
    cuda_usable = False
    for name in registry.names():
        impl = registry.get(name)
        reason = registry.unavailable_reason(name)  # a plugin's broken check is a reason, not a crash
        cuda_usable |= reason is None and impl.device.value == "cuda"
        limit = "any" if impl.max_k is None else str(impl.max_k)
        # escape: "pip install 'topkbench[flashinfer]'" is not rich markup
        rows.append((escape(name), impl.device.value, escape("yes" if reason is None else f"no: {reason}"), limit,
                     escape(impl.summary)))
    out = console()
    out.print(simple_table(("implementation", "device", "usable here", "max k", "what"), rows))
    device = device_info(cuda_usable)
    sha, dirty = git_state()
    out.print(f"device: {device.gpu_name} ({device.sm_count} {'SMs' if device.is_cuda else 'cores'}"
              + (f", L2 {device.l2_bytes >> 20} MiB" if device.l2_bytes else "") + ")")
    out.print(f"topkbench {__version__}" + (f" ({sha[:10]}{'+dirty' if dirty else ''})" if sha else "")
              + f", torch {device.torch_version}" + (f", CUDA {device.cuda_version}" if device.cuda_version else "")
              + (f", CuPy {device.cupy_version}" if device.cupy_version else ", CuPy not installed")
              + (f", driver {device.driver}" if device.driver else ""))
    out.print(f"bundled configs: {', '.join(bundled_configs())}")
    # impl="auto" runs on the device of its input: the current GPU when one is usable, and the CPU.
    slugs = ([device.gpu_slug] if device.is_cuda else []) + [device_info(False).gpu_slug]
    for slug in slugs:
        resolution = dispatch.resolve(slug)
        out.print(f"impl='auto' on {slug}: {resolution.kind}: {resolution.reason}")


def register(app: typer.Typer) -> None:
    app.command("list")(list_command)
