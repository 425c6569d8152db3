"""An exported tagger file opened on the engine its format needs: ONNX on onnxruntime, a torch file on torch.

Each engine is imported only when its file is opened, so tagging with an ONNX file never imports torch.
"""

from __future__ import annotations

from pathlib import Path

from fsdlib.errors import FsdError
from fsdlib.tags import TaggerBase


def open_tagger_file(path: str | Path, device: str = "auto") -> TaggerBase:
    """A tagger of an exported file: an ONNX graph (`.onnx`) on onnxruntime without torch, on the CPU; a torch file
    (`.pt`) on torch, on `device` (a GPU when there is one)."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        if device not in ("auto", "cpu"):
            raise FsdError(f"an ONNX file runs on the CPU (onnxruntime): --device {device} needs the torch file (.pt)",
                           path)
        from fsdlib.onnx_tagger import OnnxTagger  # each engine imported only when used

        return OnnxTagger(path)
    from fsdlib.tagger import load_tagger

    return load_tagger(path, device)
