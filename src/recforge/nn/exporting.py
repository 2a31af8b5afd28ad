"""Whether torch is tracing or exporting a graph right now.

Layers with a data-dependent fast path (packed RNNs, row blocks, session loops) take an
export-friendly path with the same results while ``exporting()`` is true: a traced or
exported graph records one path and cannot branch on the data.
"""

from __future__ import annotations

import torch


def exporting() -> bool:
    """True while torch traces or exports a graph (ONNX, TorchScript, ``torch.export``)."""
    compiler = getattr(torch, "compiler", None)
    return bool(
        torch.jit.is_tracing()
        or torch.onnx.is_in_onnx_export()
        or (compiler is not None and compiler.is_exporting())
    )
