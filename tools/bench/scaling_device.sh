#!/usr/bin/env bash
# The multi-core scaling benchmark as one prepared script, for a lent many-core machine that has
# Python but no network (see README "Performance": bench scaling).
#
#   here:   tools/bench/scaling_device.sh prepare     # wheels for that machine's Python into .whl/
#   there:  tools/bench/scaling_device.sh run [ARGS]  # installs .whl/ into /tmp/site, runs the steps,
#                                                     # writes $OUT/scaling.json and $OUT/scaling.txt
#
# `prepare` needs pip with access to PyPI; DEVICE_PY (default 3.12) is the target's Python version.
# `run` extra ARGS go to `shardgate bench scaling` (default: --steps 1,2,4,8 --duration 10).
set -euo pipefail
cd "$(dirname "$0")/../.."
mode="${1:-run}"
shift || true

case "$mode" in
prepare)
    py="${DEVICE_PY:-3.12}"
    mkdir -p .whl
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    # The runtime dependencies the gateway and the bench import (pyproject's, plus hdrhistogram's).
    python3 -m pip download -q --only-binary=:all: --python-version "$py" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux_2_34_x86_64 --platform manylinux_2_31_x86_64 --platform manylinux1_x86_64 \
        -d .whl 'uvloop>=0.21,<0.24' 'picows>=2.3.1,<2.4' 'aiofastnet>=1.2,<1.3' 'multidict>=6,<8' \
        'orjson>=3.10,<4' 'pyzmq>=26,<28' 'pyjwt[crypto]>=2.10,<3' 'cryptography>=42' 'psutil>=6,<8' \
        'aiohttp>=3.10,<4' 'prometheus-client>=0.20,<1' 'hdrhistogram>=0.10.8,<0.11' 'redis>=5,<9' \
        'pyyaml>=6,<7' 'aio-pika>=9.4,<11' 'psycopg[binary]>=3.2,<4' 'protobuf>=7.35.1,<8'
    du -sh .whl
    echo "carry .whl to the device and run: tools/bench/scaling_device.sh run"
    ;;
run)
    out="${OUT:-/tmp/scaling-out}"
    mkdir -p "$out"
    if [ -d .whl ]; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            .whl/*.whl
        export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
    fi
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
    ulimit -n 65536 2>/dev/null || true
    python="${PYTHON:-python3}"
    nproc | sed 's/^/cpus: /' | tee "$out/scaling.txt"
    args=("$@")
    [ ${#args[@]} -gt 0 ] || args=(--steps 1,2,4,8 --duration 10)
    "$python" -m tools.bench scaling --quiet --json "${args[@]}" > "$out/scaling.json"
    "$python" - "$out/scaling.json" <<'EOF' | tee -a "$out/scaling.txt"
import json, sys
doc = json.load(open(sys.argv[1]))
print(doc["command"], "|", doc.get("build", "?"))
for r in doc["results"]:
    if "error" in r:
        print(f"{r['workers']} workers: error {r['error']}")
        continue
    print(f"{r['workers']} workers: {r['deliveries_per_s']:,.0f} deliveries/s, speed-up {r.get('speedup', 0):.2f}, "
          f"efficiency {r.get('efficiency', 0):.2f} (target {doc['target_efficiency']}), p99 {r['p99_ms']} ms, "
          f"lost {r['lost']}, cpu server {r['server_cpu_pct']}% client {r['client_cpu_pct']}%")
EOF
    ;;
*)
    echo "usage: $0 prepare | run [bench scaling args]" >&2
    exit 2
    ;;
esac
