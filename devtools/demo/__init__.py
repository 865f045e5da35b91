"""The demo traffic of `devact produce`: seeded heartbeats and a producer that keeps a rate."""
