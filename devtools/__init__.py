"""Development tools, not part of the product: neither the wheel nor the image holds them.

`services/` runs Kafka and Redis as local processes (`make services`, the test fixtures, bench);
`demo/` generates realistic heartbeats and publishes them (`devact produce` in a source checkout);
`accuracy.py` measures the user-count error, for tests/integration/ and bench/ alike.
"""
