"""Quantise a GGUF file with llama.cpp's library (llama-cpp-python), as ``llama-quantize`` does.

Run as a separate process by `annotune.export.gguf` (a failing C call cannot take the caller down, and
llama.cpp's log stays out of the caller's output)::

    python -m annotune.export.quantize IN.gguf OUT.gguf q4_k_m [THREADS]
"""

from __future__ import annotations

import ctypes
import sys

# annotune's names -> llama.cpp's ftype constants (llama_cpp.LLAMA_FTYPE_MOSTLY_*)
QUANT_TYPES = {"q8_0": "Q8_0", "q6_k": "Q6_K", "q5_k_m": "Q5_K_M", "q4_k_m": "Q4_K_M", "q4_0": "Q4_0"}


def quantize(source: str, target: str, quant: str, threads: int = 0) -> None:
    """Write ``target``: ``source`` (an F16/F32 GGUF) quantised to ``quant`` (a key of `QUANT_TYPES`)."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{QUANT_TYPES[quant]}")
    params.nthread = threads
    status = llama_cpp.llama_model_quantize(source.encode(), target.encode(), ctypes.byref(params))
    if status != 0:
        raise SystemExit(f"llama_model_quantize returned {status}")


if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) not in (3, 4) or args[2] not in QUANT_TYPES:
        raise SystemExit(f"usage: python -m annotune.export.quantize IN OUT {{{','.join(QUANT_TYPES)}}} [THREADS]")
    quantize(args[0], args[1], args[2], int(args[3]) if len(args) == 4 else 0)
