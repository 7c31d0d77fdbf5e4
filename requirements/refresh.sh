#!/usr/bin/env bash
# Re-resolve requirements/lock.txt: the exact versions of every dependency (all extras), for
# CPython 3.11 on Linux x86_64, under the bounds of requirements/cap.txt. A refreshed lock lands
# only after the whole suite has passed with it (bash .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
uv=$(command -v uv || true)
if [ -z "$uv" ]; then
    python3 -m venv "${TMPDIR:-/tmp}/fixmatch-ray-uv"
    "${TMPDIR:-/tmp}/fixmatch-ray-uv/bin/pip" install -q uv
    uv="${TMPDIR:-/tmp}/fixmatch-ray-uv/bin/uv"
fi
"$uv" pip compile pyproject.toml --all-extras --python-version 3.11 \
    --python-platform x86_64-manylinux_2_28 -c requirements/cap.txt \
    --custom-compile-command "requirements/refresh.sh" -o requirements/lock.txt "$@"
