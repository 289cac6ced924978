#!/usr/bin/env bash
# Prepare FlashInfer for a GPU machine that has no package index (docs/plugins.md, "FlashInfer").
#
# Run it here, in the repository root, on a machine that reaches PyPI:
#
#   scripts/flashinfer_wheels.sh [--stub-cub]
#
# 1. Downloads, as wheels for CPython 3.12 on x86-64 Linux, into .whl/ (ignored by git):
#    flashinfer-python and the needs the GPU image lacks (apache-tvm-ffi, cuda-python, cuda-tile).
#    The image already has torch, numpy, ninja, click, einops, requests, tqdm, tabulate, packaging,
#    nvidia-ml-py and cuda-bindings; FlashInfer's other needs (cutlass-dsl, cudnn-frontend, nccl)
#    are for other kernels and are imported lazily, so they are left out (--no-deps).
# 2. Strips the flashinfer wheel (62 MB, 426 MB unpacked) of the CUDA sources that the top-k module
#    does not build: it keeps every .py file, data/include, data/cccl and, of data/csrc, the top-k
#    translation units and the headers beside them; RECORD is rewritten to match. The wheel keeps
#    its name, so pip installs it as flashinfer-python 0.7.2.post1.
# 3. With --stub-cub, also replaces data/csrc/cub_topk.cu (CUB's DeviceBatchedTopK, the slow unit
#    of the build: 19+ minutes for the module on 16 cores, against about 5 without it) with stubs
#    that throw. flashinfer-cub then stores an error, and `flashinfer` must run with
#    FLASHINFER_TOPK_ALGO=default (FlashInfer's native dispatch without CUB).
#
# Then, on the GPU machine, with .whl carried along:
#
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#       --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PYTHONPATH
#   export FLASHINFER_CUDA_ARCH_LIST=9.0            # build for Hopper alone
#   export FLASHINFER_WORKSPACE_BASE=$PWD/.fi-cache # FlashInfer's JIT cache: keep it out of git
#   python3 -m topkbench list                        # the flashinfer* rows say "yes"
#
# The first top-k call builds the JIT module (minutes, see above). Build it once, keep the built
# .so under an ignored folder (.fi-cache/), and carry it to later runs instead of rebuilding.
set -euo pipefail
cd "$(dirname "$0")/.."

FLASHINFER_VERSION="${FLASHINFER_VERSION:-0.7.2.post1}"
TVM_FFI_VERSION="${TVM_FFI_VERSION:-0.1.15.post2}"  # flashinfer 0.7.2.post1 asks >=0.1.11,<0.2
CUDA_PYTHON_VERSION="${CUDA_PYTHON_VERSION:-13.4.4}"  # a metadata package over cuda-bindings
CUDA_TILE_VERSION="${CUDA_TILE_VERSION:-1.7.0}"
PYTHON="${PYTHON:-python3}"
STUB_CUB=0
for arg in "$@"; do
    case "$arg" in
        --stub-cub) STUB_CUB=1 ;;
        -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
        *) echo "unknown argument: $arg" >&2; exit 2 ;;
    esac
done

WHEEL=".whl/flashinfer_python-$FLASHINFER_VERSION-py3-none-any.whl"
mkdir -p .whl
rm -f "$WHEEL"  # strip (and stub) from the original every time: pip would keep a stripped copy
# The GPU image's Python (3.12, x86-64); pip matches each manylinux tag exactly, hence the list.
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d .whl "flashinfer-python==$FLASHINFER_VERSION" "apache-tvm-ffi==$TVM_FFI_VERSION" \
    "cuda-python==$CUDA_PYTHON_VERSION" "cuda-tile==$CUDA_TILE_VERSION"

STUB_CUB="$STUB_CUB" "$PYTHON" - "$WHEEL" <<'PY'
import base64
import hashlib
import os
import sys
import zipfile
from pathlib import PurePosixPath

wheel = sys.argv[1]
stub_cub = os.environ["STUB_CUB"] == "1"
# The four translation units of gen_topk_module() (flashinfer/jit/topk.py); the headers at the top
# of data/csrc are small and included by them (tvm_ffi_utils.h, topk_transform_checks.h).
TOPK_UNITS = {"topk.cu", "cub_topk.cu", "flashinfer_topk_binding.cu", "flashinfer_fast_topk_clusters_binding.cu"}
STUB = r'''// cub_topk.cu replaced by scripts/flashinfer_wheels.sh --stub-cub: CUB's DeviceBatchedTopK is
// not built (it dominates the JIT build of FlashInfer's top-k module). Every entry point throws.
#include "tvm_ffi_utils.h"

using tvm::ffi::Optional;

#define TOPKBENCH_NO_CUB TVM_FFI_THROW(RuntimeError) << "FlashInfer's CUB top-k was not built (cub_topk.cu stubbed)"

void cub_topk_page_table_transform(TensorView, TensorView, TensorView, TensorView, Optional<TensorView>,
                                   Optional<TensorView>, int64_t, int64_t, int64_t, Optional<TensorView>,
                                   Optional<TensorView>, Optional<TensorView>) { TOPKBENCH_NO_CUB; }
int64_t cub_topk_page_table_transform_workspace_size(TensorView, TensorView, int64_t, int64_t, bool, bool) {
  TOPKBENCH_NO_CUB;
  return 0;
}
void cub_topk_ragged_transform(TensorView, TensorView, TensorView, TensorView, Optional<TensorView>, int64_t,
                               int64_t, Optional<TensorView>) { TOPKBENCH_NO_CUB; }
int64_t cub_topk_ragged_transform_workspace_size(TensorView, TensorView, int64_t, int64_t, bool) {
  TOPKBENCH_NO_CUB;
  return 0;
}
void cub_topk(TensorView, TensorView, TensorView, Optional<TensorView>, int64_t, int64_t) { TOPKBENCH_NO_CUB; }
int64_t cub_topk_workspace_size(TensorView, int64_t, int64_t) {
  TOPKBENCH_NO_CUB;
  return 0;
}
'''


def keep(name: str) -> bool:
    path = PurePosixPath(name)
    parts = path.parts
    if parts[:2] != ("flashinfer", "data") or name.endswith(".py"):
        return True
    if parts[2:3] in (("include",), ("cccl",)):
        return True
    if parts[2:3] == ("csrc",) and len(parts) == 4:
        return parts[3] in TOPK_UNITS or parts[3].endswith(".h")
    return False


def record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


src = zipfile.ZipFile(wheel)
record_name = next(n for n in src.namelist() if n.endswith(".dist-info/RECORD"))
tmp = wheel + ".tmp"
kept = dropped = 0
records = []
with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as out:
    for info in src.infolist():
        name = info.filename
        if name == record_name or info.is_dir():
            continue
        if not keep(name):
            dropped += 1
            continue
        data = src.read(name)
        if stub_cub and name == "flashinfer/data/csrc/cub_topk.cu":
            data = STUB.encode()
        out.writestr(info, data)
        records.append(record_line(name, data))
        kept += 1
    out.writestr(record_name, "\n".join(records + [f"{record_name},,"]) + "\n")
src.close()
os.replace(tmp, wheel)
print(f"{wheel}: kept {kept} files, dropped {dropped}" + (", cub_topk.cu stubbed" if stub_cub else ""))
PY
ls -l .whl
du -ch .whl/*.whl | tail -1
