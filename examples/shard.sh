#!/usr/bin/env sh
# One shard of a manifest, run or continued: the entry point the examples share.
#
#   RUNNER_SHARD=2/4 RUNNER_RATE_STORE=redis://cache.internal:6379/0 \
#       examples/shard.sh manifests/nightly.yaml /data/results
#
# K/N comes from RUNNER_SHARD, or from JOB_COMPLETION_INDEX with SHARDS=N (Kubernetes).
# If this shard's newest batch under RESULTS did not finish (killed: no exit code yet;
# interrupted: 130/143; the rate store lost: 5), it is continued with `runner resume`
# (a container restarted in the same pod, a host that rebooted, last night's run cut off);
# otherwise a new batch starts. Unset or malformed shard variables make runner exit 2: a
# shard never runs every job. RUNNER_ARGS adds flags to `runner run` (e.g. --sandbox URL).
set -eu
manifest=$1
results=${2:-results}
if [ -n "${SHARDS:-}" ]; then
    shard_args="--shards $SHARDS"
    k=$(( ${JOB_COMPLETION_INDEX:?JOB_COMPLETION_INDEX is not set} + 1 ))
    n=$SHARDS
else
    shard_args=""
    k=${RUNNER_SHARD%/*}
    n=${RUNNER_SHARD#*/}
fi
name=$(sed -n 's/^name:[[:space:]]*\([A-Za-z0-9._-]*\).*/\1/p' "$manifest" | head -n 1)
existing=$(ls -d "$results/$name"/*-s"${k}"of"${n}" 2>/dev/null | tail -n 1 || true)
if [ -n "$existing" ] && { [ ! -f "$existing/batch.json" ] ||
    grep -Eq '^  "exit_code": (null|5|130|143),?$' "$existing/batch.json"; }; then
    exec runner resume "$existing" --quiet
fi
# shellcheck disable=SC2086  # shard_args and RUNNER_ARGS are words to split
exec runner run "$manifest" --out "$results" --quiet $shard_args ${RUNNER_ARGS:-}
