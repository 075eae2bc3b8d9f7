"""Generate the Python code for proto/soundsentry/v1/*.proto into shared/soundsentry/v1.

Run it with `make proto` (or `python tools/gen_proto.py`). The output depends only on the .proto
files and the pinned grpcio-tools version (see pyproject.toml), so it is reproducible;
tests/unit/test_proto_generated.py fails when the committed code is stale.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
DEFAULT_OUT = ROOT / "shared"


def proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.glob("soundsentry/v1/*.proto"))


def generate(out_dir: Path) -> list[Path]:
    """Write *_pb2.py, *_pb2.pyi, *_pb2_grpc.py and *_pb2_grpc.pyi below out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    # Typed stubs for the gRPC code come from mypy-protobuf's plugin (pinned in pyproject.toml).
    plugin = Path(sys.executable).with_name("protoc-gen-mypy_grpc")
    if not plugin.exists():
        found = shutil.which("protoc-gen-mypy_grpc")
        if found is None:
            raise SystemExit("protoc-gen-mypy_grpc not found: pip install mypy-protobuf")
        plugin = Path(found)
    well_known = resources.files("grpc_tools") / "_proto"
    files = [str(p.relative_to(PROTO_ROOT)) for p in proto_files()]
    args = [
        "grpc_tools.protoc",
        f"--proto_path={PROTO_ROOT}",
        f"--proto_path={well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--plugin=protoc-gen-mypy_grpc={plugin}",
        f"--mypy_grpc_out={out_dir}",
        *files,
    ]
    # protoc resolves paths relative to the working directory only through --proto_path.
    code = protoc.main(args)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")
    return sorted((out_dir / "soundsentry" / "v1").glob("*_pb2*.py*"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output root (package dirs)")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path.relative_to(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
