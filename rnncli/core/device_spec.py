"""``--device`` syntax, checked before anything heavy is imported. Light: no TensorFlow."""

from __future__ import annotations

import re

from rnncli.core.errors import DeviceError

_DEVICE_RE = re.compile(r"^(auto|cpu|gpu)(?::(all|\d+(?:,\d+)*))?$")
# RNNCLI_CPU_DEVICES=N splits the CPU into N logical devices (cpu:0 ... cpu:N-1), so that
# training on several devices (MirroredStrategy) can be tried and tested without GPUs.
CPU_DEVICES_ENV = "RNNCLI_CPU_DEVICES"

def parse_device(spec: str) -> tuple[str, tuple[int, ...] | str | None]:
    """'auto' | 'cpu' | 'gpu' | 'gpu:N' | 'gpu:N,M,...' | 'gpu:all' (also cpu:..., for
    logical CPU devices) -> (kind, indexes or 'all' or None). Syntax only; probes nothing."""
    match = _DEVICE_RE.match(spec.strip().lower())
    usage = "use auto, cpu, gpu, gpu:N, gpu:N,M,... or gpu:all"
    if not match or (match.group(1) == "auto" and match.group(2) is not None):
        raise DeviceError(f"unknown device {spec!r}; {usage}")
    kind, chosen = match.group(1), match.group(2)
    if chosen is None or chosen == "all":
        return kind, chosen
    indexes = tuple(int(i) for i in chosen.split(","))
    if len(set(indexes)) != len(indexes):
        raise DeviceError(f"device {spec!r} names a device twice; {usage}")
    return kind, indexes
