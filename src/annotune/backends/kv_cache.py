"""Key/value caches for decoding many rows at once: the rows' prompt caches merged into one, with room to grow
in place (transformers' `DynamicLayer` concatenates, copying the whole cache at every decoding step)."""

from __future__ import annotations

from functools import cache

DECODE_BATCHES = 4  # `generate` decodes this many batches of rows together


def make_room(kv_cache, extra: int):
    """Give every plain layer of a filled `DynamicCache` room for ``extra`` more tokens, written in place while
    decoding (`DynamicLayer` concatenates, copying the whole cache at every step); returns the cache."""
    layer_type = preallocated_layer_type()
    for i, layer in enumerate(kv_cache.layers):
        if plain_layer(layer):
            kv_cache.layers[i] = layer_type([layer.keys], [layer.values], layer.keys.shape[-2], extra)
    return kv_cache


def merge_for_decoding(caches: list, length: int, extra: int):
    """One cache of all rows of ``caches`` (filled `DynamicCache` objects, each padded with zeros to ``length``
    positions), with room for ``extra`` more; None when a layer is not a plain `DynamicLayer`."""
    from transformers import DynamicCache

    if not all(plain_layer(layer) for kv in caches for layer in kv.layers):
        return None
    layer_type = preallocated_layer_type()
    merged = DynamicCache()
    merged.layers = [layer_type([kv.layers[i].keys for kv in caches], [kv.layers[i].values for kv in caches],
                                length, extra) for i in range(len(caches[0].layers))]
    return merged


def plain_layer(layer) -> bool:
    from transformers.cache_utils import DynamicLayer

    return type(layer) is DynamicLayer and layer.is_initialized and layer.keys.dim() == 4


@cache
def preallocated_layer_type():
    from transformers.cache_utils import DynamicLayer

    class PreallocatedLayer(DynamicLayer):
        """A `DynamicLayer` whose keys and values are views of buffers with room to grow."""

        def __init__(self, keys: list, values: list, length: int, extra: int):
            """Rows of ``keys``/``values`` (tensors [rows, heads, positions <= length, dim]) stacked, zero-padded
            to ``length`` positions (masked while decoding), with ``extra`` free positions after them."""
            super().__init__()
            self.dtype, self.device, self.is_initialized = keys[0].dtype, keys[0].device, True
            self.length = length
            self.buffers = []
            for parts in (keys, values):
                first = parts[0]
                buf = first.new_zeros((sum(p.shape[0] for p in parts), first.shape[1], length + extra, first.shape[-1]))
                row = 0
                for part in parts:
                    buf[row: row + part.shape[0], :, :part.shape[-2]] = part
                    row += part.shape[0]
                self.buffers.append(buf)
            self.keys, self.values = (buf[:, :, :length] for buf in self.buffers)

        def update(self, key_states, value_states, *args, **kwargs):
            end = self.length + key_states.shape[-2]
            if end > self.buffers[0].shape[-2]:  # out of room: grow as a DynamicLayer does
                self.buffers = [torch_cat(buf[:, :, :self.length], new) for buf, new in
                                zip(self.buffers, (key_states, value_states))]
            else:
                for buf, new in zip(self.buffers, (key_states, value_states)):
                    buf[:, :, self.length:end] = new
            self.length = end
            self.keys, self.values = (buf[:, :, :end] for buf in self.buffers)
            return self.keys, self.values

    return PreallocatedLayer


def torch_cat(a, b):
    import torch

    return torch.cat([a, b], dim=-2)


__all__ = ["DECODE_BATCHES", "make_room", "merge_for_decoding", "plain_layer", "preallocated_layer_type"]
