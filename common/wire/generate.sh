#!/usr/bin/env bash
# Regenerates common/wire/*_pb2.py from the .proto files next to this script.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
cd "$root"
# Compiled relative to the repository root so the files register as
# "common/wire/<name>.proto" and cross-file imports become `from common.wire import ...`.
"$python" -m grpc_tools.protoc -I . --python_out=. common/wire/*.proto
for f in common/wire/*_pb2.py; do
  # Generated code is exempt from the house lint and format rules.
  { echo "# ruff: noqa"; echo "# fmt: off"; cat "$f"; } > "$f.tmp" && mv "$f.tmp" "$f"
done
