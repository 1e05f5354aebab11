#!/usr/bin/env bash
# Paper study (issue 7), parts 1, 2, 3, 4a: hyper-network INR heads on CelebA 64x64 faces.
#
#   nice -n 10 bash benchmarks/paper/run_all.sh [extra train_inr.py args, e.g. --faces DIR]
#
# Environment: STEPS (every run, default 2000: the published tables), EVAL (eval every N steps, 250), THREADS (torch
# threads per run, 1), JOBS (runs side by side, 1 = sequential; 2 uses both cores with two
# 1-thread runs, about half the wall time on an otherwise idle machine), PYTHON, RESULTS
# (folder of the JSONs, benchmarks/paper/results), DOC (report, docs/paper-study-inr.md).
# Smoke test: STEPS=3 EVAL=2 RESULTS=/tmp/r DOC=/tmp/r/doc.md bash benchmarks/paper/run_all.sh --limit-test 10
# Resumable: a run whose results/NAME.json exists is skipped (train_inr.py writes it
# atomically at the end); logs go to runs/paper-inr/NAME.log (git-ignored). Ends with report.py.
#
# Time estimate, sequential, 1 thread (measured 2026-11-27 on this 2-core machine with another
# job busy on the other core; 40-step runs, s/step at batch 32, 512 queries per face; eval =
# one test-set evaluation of 300 faces):
#   run                 s/step   eval s   x 2750 steps + 11 evals (the 2000-step runs took 2-19 min each, 51 min in all)
#   p1-anr              0.105     4.1      334 s
#   p1-transinr         0.096     1.2      277 s
#   p1-ipc              0.122     1.3      350 s
#   p2-anr-thr0         0.083     1.5      245 s
#   p3-anr-res16-jitter 0.069     0.2      198 s  (+6 s 2x/4x evaluation and PNG)
#   p3-anr-res16-nojit  0.067     0.2      192 s  (+6 s)
#   p4-anr-tok16        0.056     2.0      175 s
#   p4-anr-tok256       0.463    13.9     1426 s
#   p4-anr-dim16        0.106     4.2      337 s
#   p4-anr-dim32        0.100     4.3      322 s
#   total about 3,870 s + 10 x ~5 s start-up = about 65 minutes (JOBS=2: about 35 minutes).
set -euo pipefail
cd "$(dirname "$0")/../.."
STEPS=${STEPS:-2000}
EVAL=${EVAL:-250}
THREADS=${THREADS:-1}
JOBS=${JOBS:-1}
PY=${PYTHON:-python}
R=${RESULTS:-benchmarks/paper/results}
DOC=${DOC:-docs/paper-study-inr.md}
LOGS=runs/paper-inr

if [[ ${1:-} == __one ]]; then            # one experiment (used by the JOBS > 1 queue)
    shift
    name=$1
    shift
    json=$R/$name.json
    if [[ -f $json ]]; then
        echo "skip $name ($json exists)"
        exit 0
    fi
    echo "run  $name: $*"
    start=$(date +%s)
    # shellcheck disable=SC2086  # EXTRA_ARGS is a word list on purpose
    if "$PY" benchmarks/paper/train_inr.py "$@" --steps "$STEPS" --eval-every "$EVAL" --threads "$THREADS" \
            --out "$json" ${EXTRA_ARGS:-} >"$LOGS/$name.log" 2>&1; then
        echo "done $name in $(( $(date +%s) - start )) s: $(tail -n 1 "$LOGS/$name.log")"
    else
        echo "FAILED $name (see $LOGS/$name.log)"
        exit 1
    fi
    exit 0
fi

mkdir -p "$R" "$LOGS"
export STEPS EVAL THREADS PYTHON="$PY" RESULTS="$R" EXTRA_ARGS="$*"

# name, then train_inr.py arguments. Defaults: 64x64, 64 tokens (8x8 patches) x 64 dims,
# jitter on, ANR threshold 0.01. Runs that are the same configuration are not repeated:
# p1-anr is also part 2's thresholded ANR and part 4a's 64 tokens / 64 dims point.
EXPERIMENTS=(
    # part 4a's 256-token run first: the longest, so a JOBS=2 queue stays balanced
    "p4-anr-tok256 --head anr --tokens 256"
    # part 1: attention vs linear weight modulation, equal parameters and steps
    "p1-anr --head anr --threshold 0.01"
    "p1-transinr --head transinr"
    "p1-ipc --head ipc"
    # part 2: thresholded vs plain softmax
    "p2-anr-thr0 --head anr --threshold 0"
    # part 3: variational coordinates, trained at 16x16, queried at 32x32 and 64x64
    "p3-anr-res16-jitter --head anr --train-res 16"
    "p3-anr-res16-nojitter --head anr --train-res 16 --no-jitter"
    # part 4a: number of data tokens (patch 16 / 8 / 4) and token dimension (16 / 32 / 64)
    "p4-anr-tok16 --head anr --tokens 16"
    "p4-anr-dim16 --head anr --token-dim 16"
    "p4-anr-dim32 --head anr --token-dim 32"
)

status=0
printf '%s\n' "${EXPERIMENTS[@]}" | xargs -P "$JOBS" -L 1 bash "$0" __one || status=$?
"$PY" benchmarks/paper/report.py --results "$R" --doc "$DOC"
exit $status
