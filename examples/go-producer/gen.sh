#!/usr/bin/env bash
# Regenerates gen/soundsentry/v1/soundsentry.pb.go from proto/soundsentry/v1/soundsentry.proto.
#
# Reproducible: protoc is the one pinned in the project's venv (grpcio-tools, see
# pyproject.toml) and protoc-gen-go is built from the google.golang.org/protobuf version
# pinned in this module's go.mod, so the generator always matches the runtime library.
#
# Usage: ./gen.sh            (from anywhere; PYTHON overrides the venv interpreter)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
python="${PYTHON:-$repo/.venv/bin/python}"
module="github.com/soundsentry/soundsentry/examples/go-producer"
gopkg="$module/gen/soundsentry/v1"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

cd "$here"
go build -o "$tmp/protoc-gen-go" google.golang.org/protobuf/cmd/protoc-gen-go

well_known="$("$python" -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')"

rm -f gen/soundsentry/v1/*.pb.go
# The proto's go_package is a placeholder; M maps the file into this module, and
# module= strips the module prefix so the output lands in ./gen/soundsentry/v1.
"$python" -m grpc_tools.protoc \
  --plugin=protoc-gen-go="$tmp/protoc-gen-go" \
  --proto_path="$repo/proto" \
  --proto_path="$well_known" \
  --go_out=. \
  --go_opt=module="$module" \
  --go_opt=Msoundsentry/v1/soundsentry.proto="$gopkg;soundsentryv1" \
  soundsentry/v1/soundsentry.proto

gofmt -l gen/ | (! grep .) || { echo "generated code is not gofmt-clean" >&2; exit 1; }
echo "wrote gen/soundsentry/v1/soundsentry.pb.go"
