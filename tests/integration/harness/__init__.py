"""The integration tests' harness: where the services are, the per-module stack of real
processes, and the helpers that drive them; tests/integration/conftest.py turns them into
fixtures."""
