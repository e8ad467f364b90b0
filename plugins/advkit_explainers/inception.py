"""The FID Inception-v3 (torch-fidelity's port of the TensorFlow graph FID is defined with), from local weights.

advkit never downloads weights. The weights file is, in this order: the
``weights`` option, else torch-fidelity's cached download
(``<torch hub dir>/checkpoints/weights-inception-2015-12-05-6726825d.pth``,
also what torchmetrics' ``FrechetInceptionDistance`` uses), else pytorch-fid's
(``pt_inception-2015-12-05-6726825d.pth`` in the same folder). When none is
there the run stops with one line saying where to put it: there is no silent
fallback to another network.

The file is read with ``torch.load(weights_only=True)`` (or safetensors) and
handed to torch-fidelity through a private temporary copy, because
torch-fidelity itself loads with ``weights_only=False``. Images in [0, 1]
are quantised to uint8 (grey repeated to RGB) as FID expects; torch-fidelity
resizes them to 299×299 the way TensorFlow did. Features: ``2048`` (pool3,
FID), ``768``, ``192`` (after the second max-pool: the "middle feature vector
of 192 features" the paper measures inversions with) or ``64``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path

import torch

from advkit.plugin import UserError

URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
CACHED_NAMES = ("weights-inception-2015-12-05-6726825d.pth", "pt_inception-2015-12-05-6726825d.pth")
STANDARD_SHA256_PREFIX = "6726825d"  # torch.hub's convention: the suffix of the file name starts its sha256
FEATURES = ("64", "192", "768", "2048")
_BUILT: dict[tuple, "FIDInception"] = {}


def cache_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_weights(weights: str = "") -> Path | None:
    """The FID Inception weights file: ``weights`` when given, else a cached download, else None."""
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise UserError(f"FID Inception weights file not found: {path}")
        return path
    return next((cache_dir() / n for n in CACHED_NAMES if (cache_dir() / n).is_file()), None)


def missing_weights_message(where: str, hint: str = "") -> str:
    return (f"{where}: the FID Inception-v3 weights are not on this machine (looked in {cache_dir()}); "
            f"download {URL} into that folder or pass --opt weights=FILE{hint}")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class FIDInception:
    """Images in [0, 1] → (N, k) features of the FID Inception-v3 (``feature`` in :data:`FEATURES`)."""

    def __init__(self, path: Path, feature: str = "2048", device="cpu"):
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        from advkit.plugin import load_weights_file

        if feature not in FEATURES:
            raise UserError(f"FID Inception features must be one of {', '.join(FEATURES)}; got {feature!r}")
        self.feature, self.path, self.sha256 = feature, path, sha256(path)
        self.standard = self.sha256.startswith(STANDARD_SHA256_PREFIX)
        state = load_weights_file(path)
        with tempfile.TemporaryDirectory() as tmp:
            copy = os.path.join(tmp, "inception.pth")
            torch.save(dict(state), copy)  # tensors only: safe for torch-fidelity's weights_only=False load
            try:
                net = FeatureExtractorInceptionV3("inception-v3-compat", [feature], feature_extractor_weights_path=copy)
            except RuntimeError as exc:
                first = str(exc).strip().splitlines()[0]
                raise UserError(f"{path} does not hold FID Inception-v3 weights ({first})") from None
        self.net = net.to(device).eval()
        self.description = f"FID Inception-v3 ({feature} features{'' if self.standard else ', non-standard weights'})"
        if not self.standard:
            warnings.warn(f"{path} is not the standard FID Inception file (sha256 {self.sha256[:12]}...): "
                          "scores are not comparable with published FIDs", stacklevel=2)

    def __call__(self, x: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
        dev = next(self.net.parameters()).device
        out = []
        with torch.inference_mode():
            for i in range(0, x.shape[0], batch_size):
                xb = x[i : i + batch_size].to(dev)
                if xb.shape[1] == 1:
                    xb = xb.expand(-1, 3, -1, -1)
                if xb.shape[1] != 3:
                    raise UserError(f"the FID Inception takes grey or RGB images, not {xb.shape[1]} channels")
                (f,) = self.net((xb.clamp(0, 1) * 255).round().to(torch.uint8))
                out.append(f.float().cpu())
        return torch.cat(out).clone()


def fid_inception(where: str, weights: str = "", feature: str = "2048", device="cpu", hint: str = "") -> FIDInception:
    """The FID Inception from local weights (cached per file), or one :class:`UserError` line when absent."""
    path = find_weights(weights)
    if path is None:
        raise UserError(missing_weights_message(where, hint))
    key = (str(path.resolve()), path.stat().st_mtime_ns, feature, str(device))
    if key not in _BUILT:
        _BUILT[key] = FIDInception(path, feature, device)
    return _BUILT[key]
