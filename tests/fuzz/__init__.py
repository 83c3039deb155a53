"""Fuzzing the broker on a real socket: bad input never crashes it or disturbs other clients."""
