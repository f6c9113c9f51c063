"""The device's memory: hygiene between batches and readings for the metrics.

Every call is a no-op (or reads zeros) on a CPU worker.

The caching allocator keeps freed blocks reserved for reuse; with variable image
sizes that reservation only grows, squeezing other processes on the card. The
policy (setting `cuda_empty_cache`) trades that against the cost of re-reserving:
`always` after every batch, `never`, or `threshold` when reserved-but-unallocated
bytes exceed a limit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, cast

import torch

log = logging.getLogger(__name__)

MEMORY_READINGS = ("allocated", "reserved", "peak", "driver_used", "driver_total")


@dataclass
class CacheClearer:
    policy: str
    threshold_bytes: int
    device: torch.device
    clears: int = 0
    bytes_released: int = 0

    def after_batch(self) -> int:
        """Apply the policy; return the bytes handed back to the driver."""
        if self.device.type != "cuda" or self.policy == "never":
            return 0
        reserved = torch.cuda.memory_reserved(self.device)
        idle = reserved - torch.cuda.memory_allocated(self.device)
        if self.policy == "threshold" and idle <= self.threshold_bytes:
            return 0
        torch.cuda.empty_cache()
        released = max(0, reserved - torch.cuda.memory_reserved(self.device))
        self.clears += 1
        self.bytes_released += released
        return released


class DeviceMemory:
    """Torch's allocator view and the driver's (NVML) view of one device's memory."""

    def __init__(self, device: torch.device) -> None:
        # torch's stub types `index` as int; it is None for a bare "cuda".
        if device.type == "cuda" and cast(int | None, device.index) is None:
            device = torch.device("cuda", torch.cuda.current_device())
        self.device = device
        self.nvml = _nvml_handle(device) if device.type == "cuda" else None

    def reset_peak(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def read(self) -> dict[str, float]:
        """Bytes by reading name (`MEMORY_READINGS`; the driver's two only with NVML)."""
        if self.device.type != "cuda":
            # A CPU worker holds no GPU memory: say so with zeros (device="cpu") rather
            # than no series, so fleet-wide panels and sums still work.
            return dict.fromkeys(MEMORY_READINGS, 0.0)
        out = {
            "allocated": float(torch.cuda.memory_allocated(self.device)),
            "reserved": float(torch.cuda.memory_reserved(self.device)),
            "peak": float(torch.cuda.max_memory_allocated(self.device)),
        }
        if self.nvml is not None:  # no NVML on a GPU worker: the driver readings are absent
            import pynvml

            info = pynvml.nvmlDeviceGetMemoryInfo(self.nvml)
            out["driver_used"], out["driver_total"] = float(info.used), float(info.total)
        return out


def _nvml_handle(device: torch.device) -> Any:
    try:
        import pynvml  # nvidia-ml-py

        pynvml.nvmlInit()
        # By PCI address: torch's index and NVML's differ under CUDA_VISIBLE_DEVICES.
        # torch's stub for the properties lacks the PCI fields the object carries.
        p: Any = torch.cuda.get_device_properties(device)
        bus_id = f"{p.pci_domain_id:08x}:{p.pci_bus_id:02x}:{p.pci_device_id:02x}.0"
        return pynvml.nvmlDeviceGetHandleByPciBusId(bus_id)
    except Exception as exc:  # no driver library, old driver, no PCI info
        log.warning("NVML unavailable (%s): driver memory gauges are not exported", exc)
        return None
