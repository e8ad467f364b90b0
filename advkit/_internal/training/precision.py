"""Precision and memory format of a training run: ``torch.autocast``, ``GradScaler`` and channels_last.

``amp`` is ``"off"`` (fp32), ``"bf16"`` or ``"fp16"``. Autocast covers the
forward passes of the objective's update (``objective.loss``); the loss is
taken in fp32 and the parameters, the optimizer state and every checkpoint
stay fp32 (autocast casts per operation, never the weights). fp16 needs CUDA
and runs with a ``torch.amp.GradScaler``: a step whose gradients overflow is
skipped by the scaler, and the epoch's notes count such steps. bf16 runs on
CPU and on CUDA cards that support it.

The training adversary stays fp32 unless ``amp_adversary``: input gradients
computed in reduced precision are coarser (in fp16 small ones underflow to
zero), which can weaken the attack the model trains against, the same
gradient masking that makes a reduced-precision evaluation overstate
robustness. Validation (and ``advkit eval``) always runs in fp32.

``channels_last``: ``None`` puts the model and the batches in the
channels_last memory format on CUDA for image inputs (C, H, W) and leaves
them contiguous elsewhere; ``True``/``False`` force it. Checkpoints are
written contiguous whatever the format in training.
"""

from __future__ import annotations

import contextlib
import difflib

import torch

from advkit._internal.errors import UserError

AMP = ("off", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_amp(amp: str, amp_adversary: bool) -> None:
    """The device-free checks of ``amp`` and ``amp_adversary`` (run with the other options)."""
    if amp not in AMP:
        close = difflib.get_close_matches(str(amp), AMP, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(f"--amp must be one of {', '.join(AMP)}, got {amp!r}{hint}")
    if amp_adversary and amp == "off":
        raise UserError("--amp-adversary runs the training adversary under --amp: pass --amp bf16 or --amp fp16 too")


def check_device(amp: str, device: torch.device) -> None:
    """Refuse a precision the device cannot train in, with one line."""
    if amp == "off":
        return
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--amp {amp} needs a cpu or cuda device, got {device.type}")
    if amp == "fp16" and device.type != "cuda":
        raise UserError(f"--amp fp16 needs a CUDA device (fp16 training needs CUDA's gradient scaler); "
                        f"on {device.type} use --amp bf16 or --amp off")
    if amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError(f"--amp bf16: {torch.cuda.get_device_name(device)} does not support bfloat16; "
                        "use --amp fp16 or --amp off")


class Precision:
    """One run's autocast contexts, optimizer step (with the fp16 scaler) and memory format."""

    def __init__(self, amp: str, amp_adversary: bool, channels_last: bool | None, device: torch.device,
                 input_shape):
        check_amp(amp, amp_adversary)
        check_device(amp, device)
        images = len(tuple(input_shape)) == 3
        if channels_last and not images:
            raise UserError(f"--channels-last needs image inputs (C, H, W); this model takes {tuple(input_shape)}")
        self.amp, self.amp_adversary, self.device = amp, bool(amp_adversary), device
        self.channels_last = (device.type == "cuda" and images) if channels_last is None else bool(channels_last)
        self.scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None
        self.skipped = 0

    @property
    def update_dtype(self) -> str:
        return "fp32" if self.amp == "off" else self.amp

    @property
    def adversary_dtype(self) -> str:
        return self.amp if self.amp_adversary else "fp32"

    @property
    def memory_format(self) -> str:
        return "channels_last" if self.channels_last else "contiguous"

    def _autocast(self, on: bool):
        if not on or self.amp == "off":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=DTYPES[self.amp])

    def update(self):
        """The context of the objective's forward passes."""
        return self._autocast(True)

    def adversary(self):
        """The context of the training adversary (autocast only with ``amp_adversary``)."""
        return self._autocast(self.amp_adversary)

    def prepare_model(self, model: torch.nn.Module) -> None:
        """Put the model's 4-D parameters and buffers in channels_last (before the optimizer is built)."""
        if self.channels_last:
            model.to(memory_format=torch.channels_last)

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in the run's memory format (a copy on the same device when the format changes)."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def backward_step(self, loss: torch.Tensor, optimizer) -> None:
        """Backward and optimizer step; under fp16 through the scaler, counting the steps it skips."""
        if self.scaler is None:
            loss.backward()
            optimizer.step()
            return
        before = self.scaler.get_scale()
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()
        if self.scaler.get_scale() < before:  # the scale backs off exactly when the step was skipped
            self.skipped += 1

    def take_notes(self, steps: int) -> list[str]:
        """The epoch's note on skipped fp16 steps (none when no step was skipped); resets the count."""
        skipped, self.skipped = self.skipped, 0
        if not skipped:
            return []
        return [f"fp16: the gradient scaler skipped {skipped} of {steps} steps (inf/NaN gradients, "
                f"scale now {self.scaler.get_scale():g})"]

    def describe(self) -> str:
        """The line printed before the first epoch."""
        return (f"training on {self.device.type}: update in {self.update_dtype}"
                f"{' (autocast)' if self.amp != 'off' else ''}, adversary in {self.adversary_dtype}, "
                f"validation in fp32; memory format {self.memory_format}")

    def record(self) -> dict:
        """What each epoch's metrics record about precision and memory format."""
        return {"precision": self.update_dtype, "adversary_precision": self.adversary_dtype,
                "memory_format": self.memory_format}

    def state_dict(self) -> dict:
        """The scaler's state (scale and growth tracker) for a resume; empty without fp16."""
        return dict(self.scaler.state_dict()) if self.scaler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
