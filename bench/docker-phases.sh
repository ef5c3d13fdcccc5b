#!/usr/bin/env bash
# Times each Docker API call of pipe's previous per-job lifecycle, now its fallback (create, upload the
# inputs as a tar, start, wait, inspect, logs, download the JUnit file, remove), N times, with curl on
# the engine's socket, for one imported HumanEval task (BENCHMARKS.md, "Docker: where the time goes").
# Usage: N=8 bench/docker-phases.sh [TASK_DIR]   (default: the task bench/humaneval.sh imported)
set -euo pipefail
N=${N:-10}
T=${1:-/tmp/pipe-bench-humaneval/out/humaneval/humaneval-0}
S=/var/run/docker.sock
# The entry point: the gate command's argument before the time limit.
entry=$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["gate"]["command"][-2])' "$T/task.toml")
tmp=$(mktemp -d); mkdir -p $tmp/in/{impl,hidden,scratch,tmp,home,out}
cp $T/reference/solution.py $tmp/in/impl/; cp $T/hidden/* $tmp/in/hidden/
tar -C $tmp/in --owner=65534 --group=65534 -cf $tmp/in.tar .
script='export PIPE_IMPL_DIR="$PIPE_WORK/impl" PIPE_HIDDEN_DIR="$PIPE_WORK/hidden" && cd "$PIPE_WORK/scratch" && export PIPE_JUNIT="$PIPE_WORK/out/junit-1.xml" && exec python3 -I -S -B $PIPE_WORK/hidden/humaneval_check.py '"$entry"' 3'
body=$(python3 -c 'import json,sys; print(json.dumps({"Image":"pipe-sandbox/python:bookworm","Cmd":["sh","-c",sys.argv[1]],"Env":["PIPE_WORK=/work","HOME=/work/home","TMPDIR=/work/tmp","PATH=/usr/bin:/bin"],"User":"65534:65534","WorkingDir":"/work/scratch","NetworkDisabled":True,"Volumes":{"/work":{}},"HostConfig":{"NetworkMode":"none","Memory":536870912,"MemorySwap":536870912,"PidsLimit":256,"NanoCpus":1000000000,"ReadonlyRootfs":True,"Tmpfs":{"/tmp":"rw,nosuid,nodev,size=64m"},"CapDrop":["ALL"],"SecurityOpt":["no-new-privileges"]}}))' "$script")
c() { curl -s -o $tmp/out -w '%{time_total}' --unix-socket $S "$@"; }
printf 'create\tupload\tstart\twait\tinspect\tlogs\tdownload\tremove\ttotal\n'
for i in $(seq $N); do
  t0=$(date +%s.%N)
  a=$(c -X POST -H 'Content-Type: application/json' -d "$body" http://d/containers/create); id=$(python3 -c 'import json;print(json.load(open("'$tmp/out'"))["Id"])')
  b=$(c -X PUT -H 'Content-Type: application/x-tar' --data-binary @$tmp/in.tar "http://d/containers/$id/archive?path=/work")
  d=$(c -X POST http://d/containers/$id/start)
  e=$(c -X POST http://d/containers/$id/wait)
  f=$(c http://d/containers/$id/json)
  g=$(c "http://d/containers/$id/logs?stdout=1&stderr=1")
  h=$(c "http://d/containers/$id/archive?path=/work/out/junit-1.xml")
  k=$(c -X DELETE "http://d/containers/$id?force=1&v=1")
  t1=$(date +%s.%N)
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' $a $b $d $e $f $g $h $k $(echo "$t1 - $t0" | bc)
done
rm -rf $tmp
