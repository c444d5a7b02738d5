"""Video I/O on PyAV: probing and indexing a source, decoding a shard exactly, encoding segments
and assembling the output."""
