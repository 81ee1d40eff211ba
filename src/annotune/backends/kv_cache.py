"""Key/value caches for decoding many rows at once: the prompt caches of several batches of rows copied into
one set of buffers with room to grow in place (transformers' `DynamicLayer` concatenates, copying the whole
cache at every decoding step)."""

from __future__ import annotations

from functools import cache


def decode_batches(device) -> int:
    """How many batches of rows `generate` decodes together: 4 on a CPU (a decoding step reads every weight
    once, for 8 rows or 32), 1 elsewhere (a GPU's memory holds ``batch_size`` rows' caches, no more)."""
    return 4 if str(device) == "cpu" else 1


def make_room(kv_cache, extra: int):
    """Give every plain layer of a filled `DynamicCache` room for ``extra`` more tokens, written in place while
    decoding; returns the cache."""
    for i, layer in enumerate(kv_cache.layers):
        if plain_layer(layer):
            room = preallocated_layer_type()(layer.keys, layer.values, len(layer.keys), layer.keys.shape[-2], extra)
            room.put(0, layer.keys, layer.values)
            kv_cache.layers[i] = room
    return kv_cache


def empty_like(kv_cache, rows: int, length: int, extra: int):
    """An empty cache shaped like ``kv_cache`` (a filled `DynamicCache`) for ``rows`` rows of ``length``
    positions (zeros: the padding, masked while decoding) and ``extra`` more; fill it with `put_rows`. None
    when a layer is not a plain `DynamicLayer` (sliding windows without a shared prefix, other caches)."""
    from transformers import DynamicCache

    if not all(plain_layer(layer) for layer in kv_cache.layers):
        return None
    merged = DynamicCache()
    merged.layers = [preallocated_layer_type()(layer.keys, layer.values, rows, length, extra)
                     for layer in kv_cache.layers]
    return merged


def put_rows(merged, kv_cache, first_row: int) -> None:
    """Copy the rows of ``kv_cache`` into ``merged`` from row ``first_row`` on."""
    for target, layer in zip(merged.layers, kv_cache.layers):
        target.put(first_row, layer.keys, layer.values)


def plain_layer(layer) -> bool:
    from transformers.cache_utils import DynamicLayer

    return type(layer) is DynamicLayer and layer.is_initialized and layer.keys.dim() == 4


@cache
def preallocated_layer_type():
    import torch
    from transformers.cache_utils import DynamicLayer

    class PreallocatedLayer(DynamicLayer):
        """A `DynamicLayer` whose keys and values are views of buffers with room to grow."""

        def __init__(self, keys, values, rows: int, length: int, extra: int):
            """Zeroed buffers for ``rows`` rows of ``length`` positions and ``extra`` free ones after them, of
            ``keys``'/``values``' heads, head size, dtype and device."""
            super().__init__()
            self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True
            self.length = length
            self.buffers = [t.new_zeros((rows, t.shape[1], length + extra, t.shape[-1])) for t in (keys, values)]
            self.keys, self.values = (buf[:, :, :length] for buf in self.buffers)

        def put(self, first_row: int, keys, values) -> None:
            for buf, part in zip(self.buffers, (keys, values)):
                buf[first_row: first_row + part.shape[0], :, :part.shape[-2]] = part

        def update(self, key_states, value_states, *args, **kwargs):
            end = self.length + key_states.shape[-2]
            if end > self.buffers[0].shape[-2]:  # out of room: grow as a DynamicLayer does
                self.buffers = [torch.cat([buf[:, :, :self.length], new], dim=-2)
                                for buf, new in zip(self.buffers, (key_states, value_states))]
            else:
                for buf, new in zip(self.buffers, (key_states, value_states)):
                    buf[:, :, self.length:end] = new
            self.length = end
            self.keys, self.values = (buf[:, :, :end] for buf in self.buffers)
            return self.keys, self.values

    return PreallocatedLayer


def gathered_cache(kv_cache, rows):
    """A cache whose row i holds row ``rows[i]`` of ``kv_cache`` (a tensor of indices), gathered layer by layer as
    the forward reaches it (`gathered_layer_type`): the copies of one layer at a time, not of all layers at once,
    are alive. The new keys and values are not kept."""
    from transformers import DynamicCache

    gathered = DynamicCache()
    layer_type = gathered_layer_type()
    gathered.layers = [layer_type(layer.keys, layer.values, rows) for layer in kv_cache.layers]
    return gathered


@cache
def gathered_layer_type():
    import torch
    from transformers.cache_utils import DynamicLayer

    class GatheredLayer(DynamicLayer):
        """A `DynamicLayer` of rows of another's keys and values (`gathered_cache`)."""

        def __init__(self, keys, values, rows):
            super().__init__()
            self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True
            self.source, self.rows = (keys, values), rows
            self.keys, self.values = keys[:0], values[:0]

        def get_seq_length(self) -> int:
            return self.source[0].shape[-2]

        def update(self, key_states, value_states, *args, **kwargs):
            return tuple(torch.cat([cached.index_select(0, self.rows), new], dim=-2)
                         for cached, new in zip(self.source, (key_states, value_states)))

    return GatheredLayer


__all__ = ["decode_batches", "make_room", "empty_like", "put_rows", "plain_layer", "preallocated_layer_type",
           "gathered_cache", "gathered_layer_type"]
