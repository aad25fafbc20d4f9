#!/usr/bin/env bash
# The embedded default: installs dependencies, builds, then starts on this
# machine, with all state in ./demo:
#   - traincache-server on a local data folder (./demo/server),
#   - traincache-node with its node tier, write staging and job scratch in
#     ./demo/node,
# attaches a demo job (project "demo", team "demo") as a training platform
# would, which mounts the project at ./demo/mnt/project/demo and the team at
# ./demo/mnt/team/demo, and writes and reads a file through the mount.
# Both keep running; the script prints how to use and stop them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
bash deploy/build.sh
root="$PWD/demo"
mkdir -p "$root/server" "$root/node"
[ -s "$root/token" ] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$root/token"
addr="unix:$root/server.sock"
mnt="$root/mnt/project/demo"

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

if running "$root/server.pid"; then
  echo "traincache-server already running (pid $(cat "$root/server.pid"))"
else
  nohup build/src/cli/traincache-server --data-dir "$root/server" --listen "$addr" \
    --token-file "$root/token" > "$root/server.log" 2>&1 &
  echo $! > "$root/server.pid"
fi
cli=(build/src/cli/traincache --server "$addr" --token-file "$root/token")
for _ in $(seq 100); do "${cli[@]}" ping > /dev/null 2>&1 && break; sleep 0.1; done
"${cli[@]}" ping
"${cli[@]}" smoke --scope project:demo

if running "$root/node.pid"; then
  echo "traincache-node already running (pid $(cat "$root/node.pid"))"
else
  # A mount left by a daemon that died would block the new one.
  if grep -q " $mnt " /proc/mounts; then umount -l "$mnt"; fi
  nohup build/src/cli/traincache-node --server "$addr" --token-file "$root/token" \
    --mount-root "$root/mnt" --tier-dir "$root/node/tier" --staging-dir "$root/node/staging" \
    --scratch-dir "$root/node/scratch" --admin-socket "$root/node.sock" > "$root/node.log" 2>&1 &
  echo $! > "$root/node.pid"
fi
for _ in $(seq 100); do [ -S "$root/node.sock" ] && break; sleep 0.1; done
# What a container runtime does before it starts a job's container (see
# deploy/launch-job.sh): the env and bind mounts come back as shell lines.
"${cli[@]}" --node-socket "$root/node.sock" attach --project demo --team demo --gpu H100 \
  --job demo-job | tee "$root/demo-job.env"
echo "hello from the mount at $(date -u +%FT%TZ)" > "$mnt/hello.txt"
cat "$mnt/hello.txt"
ls -l "$mnt"
df -h "$mnt"

cat <<MSG

The demo project is mounted at $mnt (an ordinary folder: try cp, tar, python).
  traincache-server  pid $(cat "$root/server.pid"), data in $root/server, log $root/server.log
  traincache-node    pid $(cat "$root/node.pid"), tier in $root/node, log $root/node.log
The demo job's container env is in $root/demo-job.env.
Node counters:    ${cli[*]} --node-socket $root/node.sock stats
Another job:      ${cli[*]} --node-socket $root/node.sock attach --project demo --gpu H100 --job j2
End the job:      ${cli[*]} --node-socket $root/node.sock detach --job demo-job
Where it pins:    ${cli[*]} pin show demo
What is cached:   ${cli[*]} summarize demo
Server counters:  ${cli[*]} server-stats
Stop both:        kill $(cat "$root/node.pid") && sleep 1 && kill $(cat "$root/server.pid")
MSG
