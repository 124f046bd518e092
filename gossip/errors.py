"""The one exception type every gossip decoder raises on bad input.

The trio shell catches exactly this type, counts the packet in the ``decode_errors``
metric and drops it.  Anything else escaping a decoder is a bug.
"""


class DecodeError(ValueError):
    """Input bytes (packet, stream, or embedded message) are malformed."""
