#!/usr/bin/env bash
# The embedded default: installs dependencies, builds, starts traincache-server
# on a local data folder (./demo/server) and proves it answers by writing a
# file through chunk upload + commit and reading it back.
# The server keeps running; the script prints how to use and stop it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
bash deploy/build.sh
root="$PWD/demo"
mkdir -p "$root/server"
[ -s "$root/token" ] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$root/token"
addr="unix:$root/server.sock"

if [ -f "$root/server.pid" ] && kill -0 "$(cat "$root/server.pid")" 2>/dev/null; then
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
"${cli[@]}" usage project:demo
cat <<MSG

traincache-server is running (pid $(cat "$root/server.pid")), data in $root/server, log in $root/server.log.
Talk to it:  ${cli[*]} stats
Stop it:     kill $(cat "$root/server.pid")
MSG
