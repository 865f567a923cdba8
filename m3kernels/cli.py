"""The `m3k` command: `m3k info`, `m3k bench`, `m3k encode`."""

from __future__ import annotations

import platform
import sys

import torch

from m3kernels import __version__, _backend, _native


def info() -> int:
    """Versions, compiled module, and which backend serves each op on each device here."""
    print(f"m3kernels {__version__}  python {platform.python_version()}  torch {torch.__version__}")
    try:
        import triton

        print(f"triton {triton.__version__}")
    except ImportError:
        print("triton: not installed")
    if _native.have_cpu_kernels():
        print(f"m3kernels._C: built (SIMD {_native.C.simd}, OpenMP threads {_native.C.openmp_max_threads}, "
              f"CUDA kernels {'yes' if _native.have_cuda_kernels() else 'no'})")
    else:
        print(f"m3kernels._C: UNAVAILABLE ({_native.IMPORT_ERROR}); only the reference backend works")
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
        print(f"GPU: {torch.cuda.get_device_name()} (CUDA {torch.version.cuda})")
    else:
        print("GPU: none")
    for device in devices:
        print(f"\nbackends on {device.type} (auto picks the first available of {_backend.AUTO_ORDER[device.type]}):")
        for op, table in _backend.availability(device).items():
            chosen = _backend.resolve(op, "auto", device)
            print(f"  {op:17s} auto -> {chosen}")
            for b, why in table.items():
                print(f"    {b:10s} {'available' if why is None else 'unavailable: ' + why}")
    print("\nattention_varlen on CPU runs torch's SDPA once per sequence (its flash CPU kernel).")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: m3k {info,bench,encode} [options]   (m3k CMD --help for options)")
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "info":
        return info()
    if cmd == "bench":
        from m3kernels.benchmarks.run import main as bench_main

        return bench_main(rest)
    if cmd == "encode":
        from m3kernels.model.cli import encode_main

        return encode_main(rest)
    print(f"m3k: unknown command {cmd!r}; expected info, bench or encode", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
