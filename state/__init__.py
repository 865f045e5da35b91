"""The Redis state: key schema, encoding, TTLs, Lua scripts, and every read and write of them."""
