#!/bin/bash
# Generates the Python gRPC stubs (and mypy stubs for the messages) for the CRI API into OUT (default: criruntime/api).
# proto/ is mapped to the virtual path criruntime/api so the generated modules import each other
# as criruntime.api.runtime.v1.*.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-criruntime/api}
PY=${PYTHON:-.venv/bin/python}
export PATH="$(dirname "$PY"):$PATH"  # protoc finds the protoc-gen-mypy plugins in the venv
mkdir -p "$OUT"
"$PY" -m grpc_tools.protoc \
  --proto_path=criruntime/api=proto \
  --python_out="$OUT/../.." --grpc_python_out="$OUT/../.." \
  --mypy_out="$OUT/../.." \
  criruntime/api/runtime/v1/api.proto
touch "$OUT/runtime/__init__.py" "$OUT/runtime/v1/__init__.py"
