#!/bin/sh
# Smoke test of a running Switchboard deployment: is it ready, and does it answer one signed
# webhook message?
#
#   deploy/smoke.sh URL SECRET
#
# URL is the base URL of `bot run` (e.g. http://127.0.0.1:8080), SECRET its WEBHOOK_SECRET.
# 1. GET URL/health/ready until it answers 200 (Postgres, migrations and Redis are ok).
# 2. POST URL/webhooks/NAME?wait=true with one message signed as in docs/webhook.md
#    (X-Signature: sha256=<hex HMAC-SHA256 of the raw body keyed with SECRET>).
#    200 with a non-empty "answer": pass. 202 (accepted/duplicate: not answered within the
#    server's wait) or a client-side timeout: the same request (same id) again, until the
#    deadline. Anything else: fail, printing the status and body.
# Exit status 0 = pass, 1 = fail (also for a missed deadline or wrong usage).
#
# Settings (environment):
#   SMOKE_TIMEOUT_S          overall deadline, seconds, readiness included (default 120)
#   SMOKE_REQUEST_TIMEOUT_S  longest one HTTP request may take, seconds (default 40: above the
#                            server's WEBHOOK_WAIT_TIMEOUT_S, 30 by default)
#   SMOKE_WEBHOOK            the {name} of /webhooks/{name} (default smoke)
#   SMOKE_TEXT               the message text (default "What is Switchboard?")
#   SMOKE_ID                 the message id (default smoke-<epoch seconds>-<pid>: a new one each
#                            run, as a repeated id is answered from the stored reply)
#   SMOKE_CURL_OPTS          extra curl options, split on spaces (e.g. "--cacert ca.pem")
#
# Needs curl, openssl and POSIX tools; python3, if present, parses the JSON answer. The
# secret is passed to openssl on its command line: run this where the process list is private.
set -eu

say() { printf 'smoke: %s\n' "$*"; }
fail() { printf 'smoke: FAIL: %s\n' "$*" >&2; exit 1; }

[ "$#" -eq 2 ] || fail "usage: $0 URL SECRET (e.g. $0 http://127.0.0.1:8080 \"\$WEBHOOK_SECRET\")"
url=${1%/}
secret=$2
[ -n "$secret" ] || fail "SECRET is empty"
case $url in http://* | https://*) ;; *) fail "URL must start with http:// or https://: $url" ;; esac
for tool in curl openssl; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool is not installed"
done

timeout_s=${SMOKE_TIMEOUT_S:-120}
request_s=${SMOKE_REQUEST_TIMEOUT_S:-40}
name=${SMOKE_WEBHOOK:-smoke}
text=${SMOKE_TEXT:-What is Switchboard?}
id=${SMOKE_ID:-smoke-$(date +%s)-$$}
curl_opts=${SMOKE_CURL_OPTS:-}
deadline=$(($(date +%s) + timeout_s))

out=$(mktemp)
trap 'rm -f "$out" "$out.err"' EXIT
trap 'exit 1' INT TERM

left() { echo $((deadline - $(date +%s))); }

# request METHOD URL [BODY SIGNATURE]: sets $code (HTTP status, 000 = no response) and $rc
# (curl's exit status); the body is in $out
request() {
    max=$request_s
    [ "$(left)" -lt "$max" ] && max=$(left)
    [ "$max" -lt 1 ] && max=1
    rc=0
    if [ "$#" -gt 2 ]; then
        # shellcheck disable=SC2086  # SMOKE_CURL_OPTS is split on purpose
        code=$(curl -sS $curl_opts -o "$out" -w '%{http_code}' --max-time "$max" -X "$1" \
            -H 'Content-Type: application/json' -H "X-Signature: sha256=$4" \
            --data-binary "$3" "$2" 2>"$out.err") || rc=$?
    else
        # shellcheck disable=SC2086
        code=$(curl -sS $curl_opts -o "$out" -w '%{http_code}' --max-time "$max" "$2" \
            2>"$out.err") || rc=$?
    fi
    curl_error=$(cat "$out.err" 2>/dev/null || true)
    rm -f "$out.err"
    [ -n "$code" ] || code=000
}

# JSON string escaping for the text and id: backslash, double quote, and no control characters
json_escape() { printf '%s' "$1" | tr -d '\000-\037' | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g'; }

# 1. readiness
say "GET $url/health/ready"
while :; do
    request GET "$url/health/ready"
    if [ "$code" = 200 ]; then
        say "ready: $(cat "$out")"
        break
    fi
    if [ "$code" = 000 ]; then
        why="no response (curl exit $rc: $curl_error)"
    else
        why="HTTP $code: $(head -c 500 "$out")"
    fi
    [ "$(left)" -gt 0 ] || fail "not ready within ${timeout_s}s; last answer: $why"
    say "not ready yet ($why); retrying"
    sleep 2
done

# 2. one signed message, repeated with the same id until answered
body=$(printf '{"id":"%s","user":"smoke-test","conversation":"%s","text":"%s"}' \
    "$(json_escape "$id")" "$(json_escape "$id")" "$(json_escape "$text")")
sig=$(printf '%s' "$body" | openssl dgst -sha256 -hmac "$secret" | sed 's/^.* //')
[ -n "$sig" ] || fail "openssl produced no signature"
endpoint="$url/webhooks/$name?wait=true"
attempt=0
while :; do
    attempt=$((attempt + 1))
    say "POST $endpoint id=$id (attempt $attempt)"
    request POST "$endpoint" "$body" "$sig"
    case $code in
    200)
        if command -v python3 >/dev/null 2>&1; then
            answer=$(python3 -c '
import json, sys
try:
    reply = json.load(open(sys.argv[1], encoding="utf-8"))
except ValueError as exc:
    sys.exit(f"the body is not JSON: {exc}")
answer = reply.get("answer") if isinstance(reply, dict) else None
if not isinstance(answer, str) or not answer.strip():
    sys.exit("no non-empty \"answer\" in the reply")
sources = reply.get("sources") or []
print(" ".join(answer.split())[:300], f"[{len(sources)} sources]")
' "$out" 2>&1) || fail "HTTP 200 but $answer: $(head -c 500 "$out")"
        else
            grep -q '"answer"[[:space:]]*:[[:space:]]*"[^"]' "$out" \
                || fail "HTTP 200 without a non-empty \"answer\": $(head -c 500 "$out")"
            answer=$(head -c 300 "$out")
        fi
        say "answer: $answer"
        say "PASS"
        exit 0
        ;;
    202)
        say "HTTP 202 $(head -c 200 "$out"): not answered yet; repeating the same request"
        ;;
    000)
        # a client-side timeout is the documented "hang up and ask again" case
        [ "$rc" = 28 ] || fail "no response from $endpoint (curl exit $rc: $curl_error)"
        say "no answer within the request timeout; repeating the same request"
        ;;
    *)
        case $code in
        401) hint=" (is SECRET the deployment's WEBHOOK_SECRET?)" ;;
        404) hint=" (is WEBHOOK_SECRET set on the deployment? it enables /webhooks/)" ;;
        429 | 503) hint=" (the bot asks to retry later: rate limit or Redis unreachable)" ;;
        *) hint="" ;;
        esac
        fail "HTTP $code from $endpoint$hint: $(head -c 500 "$out")"
        ;;
    esac
    [ "$(left)" -gt 0 ] || fail "no answer to id $id within ${timeout_s}s"
    sleep 1
done
