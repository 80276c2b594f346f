#!/bin/sh
# Restarts the FAILED tasks of the connectors (the order service's and the
# inventory's relays), with capped backoff.
#
# Why: Kafka Connect never restarts a failed task by itself. Debezium retries
# database errors (errors.max.retries=-1, start-up included since 3.x), but not
# what fails outside it: a producer transaction the broker refuses (e.g. an ACL,
# a fenced or timed-out transaction) kills the task, and the relay stays
# stopped until someone restarts it (test:
# status_names_each_unhealthy_cause_and_the_watchdog_restarts_a_failed_task).
# Used by the local stack (started with Connect) and by compose (its own service).
#
# CONNECT_URL (default http://connect:8083; several workers: space-separated, the
# first that answers is asked), CONNECTOR (default outbox-connector; several: space-separated,
# each watched), CONNECT_USER and
# CONNECT_PASSWORD (the REST API's basic-auth login; handed to curl in a 0600 netrc file, never
# as an argument, which every local user could read in `ps`).
set -u
urls="${CONNECT_URL:-http://connect:8083}"
names="${CONNECTOR:-outbox-connector}"
auth=""
if [ -n "${CONNECT_USER:-}" ]; then
  netrc=$(mktemp) || exit 1
  trap 'rm -f "$netrc"' EXIT
  trap 'exit 0' INT TERM
  for url in $urls; do
    host=${url#*://}
    host=${host%%/*}
    host=${host%%:*}
    printf 'machine %s login %s password %s\n' "$host" "$CONNECT_USER" "${CONNECT_PASSWORD:-}" >>"$netrc"
  done
  auth="--netrc-file $netrc"
fi
delay=2
while true; do
  failed=""
  for name in $names; do
    status=""
    for url in $urls; do
      status=$(curl $auth -fsS --max-time 5 "$url/connectors/$name/status" 2>/dev/null) && break
      status=""
    done
    case "$status" in
      *'"state":"FAILED"'*)
        failed=1
        echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) WARN connector $name has a FAILED task; restarting it (next try in at most ${delay}s)"
        curl $auth -fsS --max-time 10 -X POST \
          "$url/connectors/$name/restart?includeTasks=true&onlyFailed=true" >/dev/null 2>&1 \
          || echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) WARN restart request failed; retrying"
        ;;
    esac
  done
  if [ -n "$failed" ]; then
    sleep "$delay"
    delay=$((delay * 2))
    [ "$delay" -gt 60 ] && delay=60
    continue
  fi
  delay=2
  sleep 2
done
