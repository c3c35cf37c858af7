"""Domain errors. Each message names what is wrong and where."""


class CatalystError(Exception):
    """Base of every error the system raises on purpose."""


class EventDecodeError(CatalystError, ValueError):
    """A message is not a valid event: not JSON, unknown type, or a field fails validation."""


class ConcurrencyError(CatalystError):
    """An append lost an optimistic-concurrency race (expected last subject sequence)."""
