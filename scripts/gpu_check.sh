#!/usr/bin/env bash
# One call on the GPU machine: install, GPU tests, verify, compute-sanitizer, and benchmark sweeps.
# Everything lands under $OUT (default ./out): log.txt, and the sweeps' Parquet under $OUT/results/.
#
#   scripts/gpu_check.sh [STAGE ...]
#   stages: tests[:PYTEST_K_EXPR]  verify[:IMPL,IMPL]  sanitize[:IMPL,IMPL]
#           sweep:CONFIG[:IMPL,IMPL][:AXIS=V,V[;AXIS=V]]
#           ncu:IMPL:ROWS:SEQ_LEN:K[:DIST]  (Nsight Compute speed-of-light, memory, warp-state sections;
#                        DIST a workload distribution, normal by default)
#           ncusrc:IMPL:ROWS:SEQ_LEN:K[:DIST]  (Nsight Compute source counters: every SASS instruction's
#                        executions and stall samples, as CSV in $OUT/ncu-src-IMPL-ROWSxSEQ_LEN[-DIST].csv)
#           phases:ROWSxWIDTH,...[:DIST]  (filtered's per-row phase clocks: scripts/filtered_phases.py)
#           flashinfer  (install the wheels of scripts/flashinfer_wheels.sh from a carried .whl/ and
#                        start building FlashInfer's top-k JIT module in the background: a CPU job of
#                        minutes that later stages overlap)
#           flashinfer-wait  (wait for that build; its log is $OUT/flashinfer-build.txt)
#           compact  (merge every run's parts under $OUT/results into its one Parquet file, as a
#                     finished sweep does: an interrupted sweep leaves parts, which sit deeper than
#                     the two folder levels that come back from the GPU machine)
#   (default: tests verify:<every CUDA implementation> sanitize sweep:gpu-bench)
# Where the tree was copied without .git, set TOPKBENCH_GIT_SHA (and TOPKBENCH_GIT_DIRTY=1) so
# the results' provenance names the commit.
#
# Timings are noisy across runs: compare ratios against torch.topk measured in the same run.
set -uo pipefail
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT/results"
LOG="$OUT/log.txt"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
BASE_PYTHONPATH=$PYTHONPATH  # without FlashInfer: the tests stage never waits on its JIT build
stages=("$@")
cuda_impls=$(python3 -c "from topkbench.impls import registry; print(','.join(n for n in registry.available() if registry.get(n).device.value == 'cuda'))")
[ ${#stages[@]} -eq 0 ] && stages=(tests "verify:$cuda_impls" sanitize sweep:gpu-bench)

impl_flags() {  # "a,b" -> --impl a --impl b
    local names; IFS=, read -ra names <<<"$1"
    for n in "${names[@]}"; do [ -n "$n" ] && printf -- '--impl\n%s\n' "$n"; done
}

say() { echo "$*" | tee -a "$LOG"; }
run_stage() {  # name, command...: full output to the log, the tail to stdout
    local name=$1; shift
    say "=== $name: $*"
    local start=$SECONDS
    "$@" >>"$LOG" 2>&1
    local rc=$?
    say "=== $name: rc=$rc in $((SECONDS - start)) s"
    return $rc
}

python3 -m pip install -q --no-deps --no-build-isolation -e . >>"$LOG" 2>&1 || say "editable install failed; running from PYTHONPATH"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,utilization.gpu --format=csv >>"$LOG" 2>&1
python3 -m topkbench list 2>&1 | tee -a "$LOG"

status=0
for stage in "${stages[@]}"; do
    case $stage in
        tests|tests:*)
            select=()
            [ "$stage" != tests ] && select=(-k "${stage#tests:}")
            PYTHONPATH=$BASE_PYTHONPATH run_stage tests python3 -m pytest -q -m gpu -p no:cacheprovider "${select[@]}" tests || status=1
            grep -E "passed|failed|error" "$LOG" | tail -n 3 ;;
        verify|verify:*)
            flags=()
            [ "$stage" != verify ] && mapfile -t flags < <(impl_flags "${stage#verify:}")
            run_stage verify python3 -m topkbench verify verify -q "${flags[@]}" || status=1
            sed -n '/exactness over/,/checked cases\|error:/p' "$LOG" | tail -n 60 ;;
        sanitize|sanitize:*)
            names=()
            [ "$stage" != sanitize ] && IFS=, read -ra names <<<"${stage#sanitize:}"
            for tool in memcheck racecheck; do
                PYTHONPATH=$BASE_PYTHONPATH run_stage "sanitize-$tool" compute-sanitizer --tool "$tool" --error-exitcode 9 \
                    python3 tests/sanitize_kernels.py "${names[@]}" || status=1
            done ;;
        sweep:*)
            IFS=: read -r config impls only <<<"${stage#sweep:}"; flags=()
            [ -n "${impls:-}" ] && mapfile -t flags < <(impl_flags "$impls")
            if [ -n "${only:-}" ]; then IFS=';' read -ra slices <<<"$only"; for s in "${slices[@]}"; do flags+=(--only "$s"); done; fi
            # SWEEP_FLAGS: extra sweep options for every sweep stage, e.g. "--devices all"
            read -ra extra <<<"${SWEEP_FLAGS:-}"
            # SWEEP_DEADLINE (seconds since the script started): Ctrl-C the sweep then, so that what it
            # measured is kept and archived before the GPU machine's time limit.
            limit=()
            [ -n "${SWEEP_DEADLINE:-}" ] && limit=(timeout -s INT $((SWEEP_DEADLINE - SECONDS)))
            run_stage "sweep $config" "${limit[@]}" python3 -m topkbench sweep "$config" --out "$OUT/results" "${flags[@]}" "${extra[@]}" || status=1
            # this sweep's summary table is the last one in the log: show it in the reply too
            awk '/median us per selection/ {buf = ""} {buf = buf $0 "\n"} END {printf "%s", buf}' "$LOG" | tail -n 80 ;;
        ncu:*)
            IFS=: read -r _ impl rows seq k dist <<<"$stage"
            run_stage "ncu $impl" ncu --clock-control none --section SpeedOfLight --section MemoryWorkloadAnalysis \
                --section Occupancy --section WarpStateStats --section SchedulerStats -k "regex:${impl}_topk" \
                --metrics 'regex:^smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio$' \
                --launch-skip 2 --launch-count 1 \
                python3 scripts/profile_shape.py "$impl" "$rows" "$seq" "$k" ${dist:+"$dist"} || status=1
            awk '/==PROF==/ {buf = ""} {buf = buf $0 "\n"} END {printf "%s", buf}' "$LOG" | grep -E "Throughput|Duration|Occupancy|Registers|Bandwidth|Busy|Block Size|Grid Size|Stall|Cycles Per Issue|Issued Warp|No Eligible|Eligible Warps" | head -n 45
            # the top stall reasons: warps stalled per issued instruction, by reason
            grep -E "smsp__average_warps_issue_stalled_" "$LOG" | awk '{print $NF, $1}' | sort -g -r | head -n 8 ;;
        ncusrc:*)
            IFS=: read -r _ impl rows seq k dist <<<"$stage"
            rep="$OUT/ncu-src-$impl-${rows}x$seq${dist:+-$dist}"
            run_stage "ncu source $impl" ncu --clock-control none --section SourceCounters --section InstructionStats \
                -k "regex:${impl}_topk" --launch-skip 2 --launch-count 1 -f -o "$rep" \
                python3 scripts/profile_shape.py "$impl" "$rows" "$seq" "$k" ${dist:+"$dist"} || status=1
            ncu -i "$rep.ncu-rep" --page source --csv --print-source sass >"$rep.csv" 2>>"$LOG" || status=1
            rm -f "$rep.ncu-rep"
            say "source counters: $(wc -l <"$rep.csv") lines in $rep.csv" ;;
        phases:*)
            IFS=: read -r _ shape_list dist <<<"$stage"
            IFS=, read -ra shapes <<<"$shape_list"
            run_stage "phases" python3 scripts/filtered_phases.py "${shapes[@]}" ${dist:+--dist "$dist"} || status=1
            awk '/=== phases:/ {buf = ""} {buf = buf $0 "\n"} END {printf "%s", buf}' "$LOG" | tail -n 40 ;;
        flashinfer)
            # CUB's unit is stubbed by flashinfer_wheels.sh --stub-cub: FlashInfer's own dispatch only.
            python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
                --target /tmp/fi-site .whl/*.whl >>"$LOG" 2>&1 || { say "flashinfer wheels did not install"; status=1; }
            export PYTHONPATH=/tmp/fi-site:$PYTHONPATH FLASHINFER_CUDA_ARCH_LIST=9.0 \
                FLASHINFER_WORKSPACE_BASE=/tmp/fi-cache FLASHINFER_TOPK_ALGO=default MAX_JOBS=$(nproc)
            say "=== flashinfer: JIT build started in the background"
            python3 -c "
import torch
from topkbench.impls import registry
impl = registry.get('flashinfer')
print(impl.unavailable_reason() or 'available')
x = torch.randn(4, 40000, device='cuda')
runner = impl.prepare(x, None, 2048)
runner.run(); torch.cuda.synchronize(); print('built')" >"$OUT/flashinfer-build.txt" 2>&1 &
            FI_BUILD=$! ;;
        flashinfer-wait)
            start=$SECONDS; wait "${FI_BUILD:-0}"; rc=$?
            say "=== flashinfer build: rc=$rc after $((SECONDS - start)) s more: $(tail -n 1 "$OUT/flashinfer-build.txt")"
            [ $rc -eq 0 ] || status=1 ;;
        compact)
            run_stage compact python3 scripts/compact_results.py "$OUT/results" || status=1 ;;
        *) say "unknown stage $stage"; status=2 ;;
    esac
done
# results/<gpu>/<run>.parquet is two folders down from $OUT, the deepest that comes back.
say "=== done, status $status"
exit $status
