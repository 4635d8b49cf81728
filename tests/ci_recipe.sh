#!/usr/bin/env bash
# ftx in CI: send SRC to a receiver on this machine, check both exit codes
# and both JSON summaries. Kept identical to the README ("Using ftx in CI");
# tests/ci_recipe.rs runs it.
#   FTX  the ftx binary (default: build it with cargo, run from the repo)
#   SRC  the file or directory to send
#   OUT  where it arrives (created if missing)
#   JQ   the jq to use (default: jq; set JQ= to use python3 instead)
# Writes recv.jsonl and send.jsonl in the current directory. Exits 0 when
# everything arrived verified, else with the sender's exit code.
# shellcheck disable=SC2016  # $k and $f below are jq's, not the shell's
set -euo pipefail

: "${SRC:?set SRC to the file or directory to send}"
: "${OUT:?set OUT to the receiving directory}"
JQ=${JQ-jq}
if [ -z "${FTX:-}" ]; then
  cargo build --release --locked
  FTX=$PWD/target/release/ftx
fi

have_jq() { [ -n "$JQ" ] && command -v "$JQ" >/dev/null 2>&1; }

# field KIND KEY FILE: KEY of the first KIND event in FILE.
field() {
  if have_jq; then
    "$JQ" -rn --arg k "$1" --arg f "$2" \
      'first(inputs | select(.event == $k) | .[$f])' "$3"
  else
    python3 -c '
import json, sys
kind, key, path = sys.argv[1:]
for line in open(path, encoding="utf-8"):
    event = json.loads(line)
    if event.get("event") == kind:
        print(event[key])
        break
' "$@"
  fi
}

# events KIND FILE...: the KIND events of the FILEs, one JSON object a line.
events() {
  local kind=$1
  shift
  if have_jq; then
    "$JQ" -c --arg k "$kind" 'select(.event == $k)' "$@"
  else
    python3 -c '
import json, sys
for path in sys.argv[2:]:
    for line in open(path, encoding="utf-8"):
        event = json.loads(line)
        if event.get("event") == sys.argv[1]:
            print(json.dumps(event, ensure_ascii=False, separators=(",", ":")))
' "$kind" "$@"
  fi
}

# summary_ok FILE: FILE has a summary, and it says nothing failed.
summary_ok() {
  if have_jq; then
    "$JQ" -e 'select(.event == "summary") | .files_failed == 0 and .exit_code == 0' \
      "$1" >/dev/null
  else
    python3 -c '
import json, sys
sums = [e for e in map(json.loads, open(sys.argv[1], encoding="utf-8"))
        if e.get("event") == "summary"]
sys.exit(0 if sums and all(s["files_failed"] == 0 and s["exit_code"] == 0
                           for s in sums) else 1)
' "$1"
  fi
}

mkdir -p "$OUT"
: >recv.jsonl
"$FTX" recv --once --json --port 0 --bind 127.0.0.1 --out "$OUT" >recv.jsonl &
RECV_PID=$!
trap '[ -z "${RECV_PID:-}" ] || kill "$RECV_PID" 2>/dev/null || true' EXIT

# The first event is {"event":"listening",...,"port":N}: wait up to 10 s.
PORT=
for _ in $(seq 100); do
  PORT=$(field listening port recv.jsonl 2>/dev/null || true)
  [ -n "$PORT" ] && break
  kill -0 "$RECV_PID" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$PORT" ]; then
  echo "ci: the receiver did not start" >&2
  exit 1
fi

SEND_RC=0
"$FTX" send --json "$SRC" "127.0.0.1:$PORT" >send.jsonl || SEND_RC=$?

# The receiver exits once the session ends; give it 10 s, then stop it.
for _ in $(seq 100); do
  kill -0 "$RECV_PID" 2>/dev/null || break
  sleep 0.1
done
kill "$RECV_PID" 2>/dev/null || true
RECV_RC=0
wait "$RECV_PID" || RECV_RC=$?
RECV_PID=

echo "ci: send exit $SEND_RC, recv exit $RECV_RC" >&2
if [ "$SEND_RC" -ne 0 ] || [ "$RECV_RC" -ne 0 ] ||
  ! summary_ok send.jsonl || ! summary_ok recv.jsonl; then
  echo "ci: transfer failed:" >&2
  events file_failed send.jsonl recv.jsonl >&2 || true
  events summary send.jsonl >&2 || true
  if [ "$SEND_RC" -ne 0 ]; then exit "$SEND_RC"; fi
  exit 1
fi
events summary send.jsonl
