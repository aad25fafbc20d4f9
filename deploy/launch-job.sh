#!/usr/bin/env bash
# How a container runtime gives a training job its caches: attach the job on
# this node (mounts its project and team caches, makes its scratch folder,
# checks cluster affinity), start the container with the bind mounts and env
# traincache answers, and detach when the container exits (commits what the
# job wrote, removes the scratch folder).
#
#   deploy/launch-job.sh --project P [--team T] --gpu H100 --job J \
#       [--require-cache-affinity=false] -- IMAGE [COMMAND...]
#
# Uses docker; any runtime that takes bind mounts and env works the same way
# (for an OCI prestart hook, run the attach step in the hook and write the
# binds into the bundle's config.json instead).
# TRAINCACHE (default: traincache on PATH) and the CLI's own variables
# (TRAINCACHE_NODE_SOCKET, TRAINCACHE_SERVER, ...) are honoured.
set -euo pipefail
tc="${TRAINCACHE:-traincache}"
attach_args=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do attach_args+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
[ $# -gt 0 ] || { echo "usage: $0 --project P [--team T] --gpu G --job J -- IMAGE [CMD...]" >&2; exit 2; }
job=""
for ((i = 0; i < ${#attach_args[@]}; i++)); do
  [ "${attach_args[$i]}" = "--job" ] && job="${attach_args[$((i + 1))]}"
done
[ -n "$job" ] || { echo "$0: --job is required" >&2; exit 2; }

# A refused job (affinity, unknown GPU type) stops here with traincache's message.
env_lines="$("$tc" attach "${attach_args[@]}" -o env)"
trap '"$tc" detach --job "$job"' EXIT
eval "$env_lines"

docker_args=()
for bind in $TRAINCACHE_BINDS; do docker_args+=(-v "$bind"); done
for var in BT_PROJECT_CACHE_DIR BT_TEAM_CACHE_DIR BT_SCRATCH_DIR HF_HOME; do
  [ -n "${!var:-}" ] && docker_args+=(-e "$var=${!var}")
done
docker run --rm "${docker_args[@]}" "$@"
