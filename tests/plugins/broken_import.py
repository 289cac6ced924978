"""A plugin that fails to import."""

import topkbench_no_such_module  # noqa: F401
