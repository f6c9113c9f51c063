"""CUDA memory hygiene between batches. Every call is a no-op on a CPU worker.

The caching allocator keeps freed blocks reserved for reuse; with variable image
sizes that reservation only grows, squeezing other processes on the card. The
policy (setting `cuda_empty_cache`) trades that against the cost of re-reserving:
`always` after every batch, `never`, or `threshold` when reserved-but-unallocated
bytes exceed a limit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


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
