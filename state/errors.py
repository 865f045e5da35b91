"""Errors raised by state/."""

from __future__ import annotations


class StateError(Exception):
    """Base of every error state/ raises on purpose."""


class StoreUnavailable(StateError):
    """Redis cannot be reached or did not answer in time."""


class UnknownTimezone(StateError):
    """A client timezone is not a valid IANA name."""
