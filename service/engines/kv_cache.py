"""A KV cache for a batch whose members come and go (continuous batching on transformers).

Rows are left-aligned on one shared time axis: a sequence that joins late is left-padded (and
masked) to the batch's length, so every row writes its next key at the same column and one
``cache_position`` serves the whole batch. Keys live in a buffer that grows by doubling, so a
decode step writes one column instead of copying the whole cache the way ``torch.cat`` does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class GrowableLayer(DynamicLayer):
    """DynamicLayer with a preallocated, doubling buffer along the sequence axis."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.length = 0

    def lazy_initialization(self, key_states, value_states) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self.keys = key_states.new_empty(*key_states.shape[:2], 0, key_states.shape[-1])
        self.values = value_states.new_empty(*value_states.shape[:2], 0, value_states.shape[-1])
        self.length = 0
        self.is_initialized = True

    def reserve(self, needed: int) -> None:
        """Make room for ``needed`` columns (the lean decoder writes in place, past ``length``)."""
        capacity = self.keys.shape[-2]
        if needed <= capacity:
            return
        new_capacity = max(needed, 2 * capacity, 64)
        grow = (0, 0, 0, new_capacity - capacity)
        self.keys, self.values = F.pad(self.keys, grow), F.pad(self.values, grow)

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n = key_states.shape[-2]
        self.reserve(self.length + n)
        self.keys[:, :, self.length:self.length + n] = key_states
        self.values[:, :, self.length:self.length + n] = value_states
        self.length += n
        return self.keys[:, :, : self.length], self.values[:, :, : self.length]

    def get_seq_length(self) -> int:
        return self.length if self.is_initialized else 0

    def batch_select_indices(self, indices) -> None:
        if self.is_initialized:
            self.keys, self.values = self.keys[indices], self.values[indices]

    def drop_left(self, n: int) -> None:
        """Forget the first ``n`` columns (padding no row needs any more)."""
        if n > 0 and self.is_initialized:
            self.keys = self.keys[:, :, n:].contiguous()
            self.values = self.values[:, :, n:].contiguous()
            self.length -= n

    def view(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.keys[:, :, : self.length], self.values[:, :, : self.length]

    def replace(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        self.adopt(keys, values, keys.shape[-2])

    def adopt(self, keys: torch.Tensor, values: torch.Tensor, length: int) -> None:
        """Take buffers whose first ``length`` columns are filled."""
        self.dtype, self.device = keys.dtype, keys.device
        self.keys, self.values, self.length = keys, values, length
        self.is_initialized = True


def new_cache(num_layers: int) -> DynamicCache:
    cache = DynamicCache()
    cache.layers = [GrowableLayer() for _ in range(num_layers)]
    return cache


def left_pad(t: torch.Tensor, n: int) -> torch.Tensor:
    """Pad ``n`` zero columns before the sequence axis (-2 for KV, -1 for masks)."""
    if n == 0:
        return t
    return F.pad(t, (0, 0, n, 0)) if t.dim() == 4 else F.pad(t, (n, 0))


def merge(batch: DynamicCache, mask: torch.Tensor, single: DynamicCache, single_len: int):
    """Append one freshly prefilled sequence to the batch; returns the new attention mask."""
    batch_len = mask.shape[1]
    length = max(batch_len, single_len)
    for layer, new in zip(batch.layers, single.layers):
        nk, nv = new.view() if isinstance(new, GrowableLayer) else (new.keys, new.values)
        if not layer.is_initialized:
            layer.replace(left_pad(nk, length - single_len).contiguous(), left_pad(nv, length - single_len).contiguous())
            continue
        bk, bv = layer.view()
        layer.replace(torch.cat([left_pad(bk, length - batch_len), left_pad(nk, length - single_len)]),
                      torch.cat([left_pad(bv, length - batch_len), left_pad(nv, length - single_len)]))
    ones = torch.ones(1, single_len, dtype=mask.dtype, device=mask.device)
    return torch.cat([left_pad(mask, length - batch_len), left_pad(ones, length - single_len)])


def select(batch: DynamicCache, mask: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Keep only the rows in ``keep`` and drop columns that are padding for every remaining row."""
    for layer in batch.layers:
        layer.batch_select_indices(keep)
    mask = mask[keep]
    if mask.shape[0] == 0:
        return mask
    first_used = int(mask.any(0).nonzero()[0])
    if first_used:
        for layer in batch.layers:
            layer.drop_left(first_used)
        mask = mask[:, first_used:]
    return mask
