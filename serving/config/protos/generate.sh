#!/usr/bin/env bash
# Regenerates serving/config/protos/*_pb2.py from the .proto files next to this script.
set -euo pipefail
root="$(cd "$(dirname "$0")/../../.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
cd "$root"
# Protos are compiled relative to the repository root so that they register as
# "serving/config/protos/<name>.proto" (never clashing with upstream file names) and any
# cross-file import is emitted as `from serving.config.protos import ...`.
"$python" -m grpc_tools.protoc -I . --python_out=. serving/config/protos/*.proto
for f in serving/config/protos/*_pb2.py; do
  # Generated code is exempt from the house lint and format rules.
  { echo "# ruff: noqa"; echo "# fmt: off"; cat "$f"; } > "$f.tmp" && mv "$f.tmp" "$f"
done
