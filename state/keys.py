"""The Redis key schema. Every key string of the project is built here and nowhere else.

All keys of one device carry the hash tag ``{d:<device_id>}`` so that a device's whole series
lives in one Redis Cluster slot: the Lua scripts that apply a batch and read a series touch only
that slot. Ids are stored lower-case; dates are local days of the client's timezone (ISO format).

Keys (one line each: key, type, what it holds):

- ``da:{d:<device>}:meta`` hash: ``client`` = the owning client id; ``o<p>`` = the highest offset
  of Kafka partition p applied to the device (replays at or below it are skipped).
- ``da:{d:<device>}:<YYYY-MM>`` hash, a device-month (a listpack of a few hundred bytes):
  ``<d>`` = activity of local day d of the month; ``u0``..``u7`` = the month's users, 8-byte
  hashes (``state/encoding.py``) in order of first activity, 8 to a field; ``<d>u`` = the users
  of day d, a bitmap over them; ``w`` = ``1`` once the month had more than 64 users, its days'
  users then in day keys as below, ``<d>h`` = ``1`` once day d's is a HyperLogLog
  (apply_device.lua).
- ``da:{d:<device>}:<YYYY-MM-DD>:u`` set or HyperLogLog, in a wide month only: the users of the
  local day, as 64-bit hashes in decimal: an exact set (an intset) up to 500 users, then a
  HyperLogLog of the same hashes.
- ``da:{d:<device>}:scratch``: a temporary HyperLogLog that a read script creates and deletes.
- ``da:{c:<client>}:index`` hash: ``<device id>`` = the device's index in the client's vectors
  and records (0, 1, 2, ... by first activity); ``~`` = 80 zero bytes that keep the hash a hash
  table (state/fleet.py).
- ``da:{c:<client>}:offsets`` hash: ``<p>`` = the highest offset of Kafka partition p counted
  in the client's aggregates (their effectively-once guard).
- ``da:{c:<client>}:<YYYY-MM-DD>`` hash: the client's aggregate of the local day: ``n`` = its
  activity, ``h`` as in a device's day hash.
- ``da:{c:<client>}:<YYYY-MM-DD>:a`` string: the day's activity vector, a signed 64-bit
  big-endian integer per device index.
- ``da:{c:<client>}:<YYYY-MM-DD>:u`` set or HyperLogLog: the client's users of the day, across
  its devices (a user on two devices is one), kept as a device-day's users are.
- ``da:{c:<client>}:<YYYY-MM>:du`` hash: ``<device index>`` = the device's users of the month,
  16-byte records (device index, user hash, days of the month); ``~`` as in the index. A
  device's distinct users over a range, for rankings. Expires with the month's latest day.
- ``da:{c:<client>}:scratch``: a read script's temporary HyperLogLog, as the device's.
- ``da:client:<client>`` hash: ``timezone``, ``name``, ``created_at``.
- ``da:client:<client>:devices`` set: device ids of the client.
- ``da:clients`` set: every client id.
- ``da:applied:<topic>:<partition>`` string: the highest offset of that partition whose whole
  batch is applied (offsets no reader delivers, transaction markers and aborted records, count
  as applied once a later batch continues it); before each batch the worker compares it with
  the batch's first offset and re-reads what Redis lost (docs/design.md).
- ``da:batch:<writer id>`` string: ``<batch id>:<round trip>``, the last round trip of the
  current batch that a worker's writer has applied; the next round trip reads it back to find
  out whether Redis lost the previous ones. Deleted when the batch is applied; left by a worker
  that died in the middle of one, it expires after a day.
- ``da:token:<sha256 hex of the token>`` hash: ``clients`` (ids, or ``*``), ``name``,
  ``created_at`` and ``expires_at`` (ISO-8601 UTC; no ``expires_at``: never expires). A token's
  id is the first 12 hex digits of that hash (``state.registry.token_id``): not a secret.
- ``da:token-index`` set: the hashes of every token, for `devact token list` and `revoke ID`
  (tokens made before it existed are added by a one-time scan, marked by
  ``da:token-index:complete``).
- ``da:token-used`` hash: token id -> when the API last served it (epoch seconds, to the
  minute): the API's only write.

A device-month expires when its last day leaves the retention window (an hour later at most);
the meta key with the device's newest month; a client's day keys with their day. A token with an
expiry is kept 30 days past it (listed as expired), then its key expires. Clients, device sets
and other tokens do not expire.
"""

from __future__ import annotations

from datetime import date

PREFIX = "da"
CLIENTS = f"{PREFIX}:clients"


def device_tag(device_id: str) -> str:
    return f"{PREFIX}:{{d:{device_id}}}"


def device_meta(device_id: str) -> str:
    return f"{device_tag(device_id)}:meta"


def device_month(device_id: str, day: date) -> str:
    """The device's hash of the month of ``day``: each day's activity and users."""
    return f"{device_tag(device_id)}:{day.year:04d}-{day.month:02d}"


def device_month_suffix(day: date) -> str:
    """What follows ``device_tag`` in ``device_month``: a read packs one device's month keys as
    its tag followed by suffixes worked out once per range (``device_month(d, day) ==
    device_tag(d) + device_month_suffix(day)``)."""
    return f":{day.year:04d}-{day.month:02d}"


def day_users(device_id: str, day: date) -> str:
    """The users of a day of a wide month (more users than its dictionary holds). The scripts
    build it from the month key: ``device_month(d, day) + "-<dd>:u"``."""
    return f"{device_tag(device_id)}:{day.isoformat()}:u"


def legacy_day_counter(device_id: str, day: date) -> str:
    """The day hash of the layout before device-months (``n``, ``o<p>``, ``h``): what ``devact
    migrate`` converts (state/migrate.py)."""
    return f"{device_tag(device_id)}:{day.isoformat()}"


def device_scratch(device_id: str) -> str:
    return f"{device_tag(device_id)}:scratch"


def client_tag(client_id: str) -> str:
    """The hash tag of a client's aggregates: one Redis Cluster slot per client."""
    return f"{PREFIX}:{{c:{client_id}}}"


def client_day(client_id: str, day: date) -> str:
    return f"{client_tag(client_id)}:{day.isoformat()}"


def client_day_users(client_id: str, day: date) -> str:
    return f"{client_tag(client_id)}:{day.isoformat()}:u"


def client_day_suffix(day: date) -> str:
    """What follows ``client_tag`` in ``client_day``: a read packs one client's day keys as
    its tag followed by suffixes worked out once per range."""
    return f":{day.isoformat()}"


def client_day_users_suffix(day: date) -> str:
    """What follows ``client_tag`` in ``client_day_users`` (as ``client_day_suffix``)."""
    return f":{day.isoformat()}:u"


def client_day_activity(client_id: str, day: date) -> str:
    """The day's activity vector: each device's activity, by its index (state/fleet.py)."""
    return f"{client_tag(client_id)}:{day.isoformat()}:a"


def client_day_activity_suffix(day: date) -> str:
    """What follows ``client_tag`` in ``client_day_activity`` (as ``day_counter_suffix``)."""
    return f":{day.isoformat()}:a"


def client_devices_index(client_id: str) -> str:
    """Hash: each device of the client that had activity -> its index in the vectors."""
    return f"{client_tag(client_id)}:index"


def client_offsets(client_id: str) -> str:
    """Hash: partition -> the highest offset counted in the client's fleet aggregates."""
    return f"{client_tag(client_id)}:offsets"


def client_month_users(client_id: str, day: date) -> str:
    """The device-users hash of the month of ``day``."""
    return f"{client_tag(client_id)}:{day.year:04d}-{day.month:02d}:du"


def client_scratch(client_id: str) -> str:
    return f"{client_tag(client_id)}:scratch"


def client(client_id: str) -> str:
    return f"{PREFIX}:client:{client_id}"


def client_devices(client_id: str) -> str:
    return f"{PREFIX}:client:{client_id}:devices"


def applied(topic: str, partition: int) -> str:
    return f"{PREFIX}:applied:{topic}:{partition}"


def batch_marker(writer_id: str) -> str:
    return f"{PREFIX}:batch:{writer_id}"


def node_tag(number: int) -> str:
    """A hash tag for keys that must live on one Redis Cluster primary: ``number`` is searched
    until the tag's slot is that node's (state/cluster_transport.py)."""
    return f"{PREFIX}:{{n:{number}}}"


def node_batch_marker(tag: str, writer_id: str) -> str:
    """``batch_marker`` of one cluster primary."""
    return f"{tag}:batch:{writer_id}"


def node_applied(tag: str, topic: str, partition: int) -> str:
    """``applied`` as one cluster primary holds it."""
    return f"{tag}:applied:{topic}:{partition}"


def token(token_hash: str) -> str:
    return f"{PREFIX}:token:{token_hash}"


TOKEN_PATTERN = f"{PREFIX}:token:*"
TOKEN_INDEX = f"{PREFIX}:token-index"
TOKEN_INDEX_COMPLETE = f"{PREFIX}:token-index:complete"
TOKEN_USED = f"{PREFIX}:token-used"


CHANGES_CHANNEL = f"{PREFIX}:changes"
"""Pub/sub channel: after each batch, the ids of the devices it changed, space-separated."""

TOKENS_CHANNEL = f"{PREFIX}:tokens"
"""Pub/sub channel: the hash of each token revoked, so API processes forget its grant at once
(their cache's lifetime bounds it when the message is lost)."""

ALL_CLIENTS = "*"
"""Value of a token's ``clients`` field that grants every client."""

OFFSET_FIELD_PREFIX = "o"
COUNT_FIELD = "n"
