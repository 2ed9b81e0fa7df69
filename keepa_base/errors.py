"""The project's one error tree. Every error keepa-deals raises on purpose derives from
:class:`KeepaDealsError`; messages name what was wrong and never contain the API key.

    KeepaDealsError
    +-- ConfigError            a bad setting (names the environment variable or option)
    +-- ScenarioError          a bad simulator scenario (names the key)
    +-- StorageError           the database refused or failed a storage call (never shows a password)
    |   +-- DatabaseUnavailable  cannot reach or lock the database now: retry later, nothing is lost
    +-- KeepaError             anything Keepa answered or failed to answer
        +-- NotEnoughTokens    HTTP 429; carries the envelope and when to retry
        +-- BadKey             HTTP 402: bad or expired key
        +-- RequestRejected    HTTP 400 (and 404/405): Keepa's error type and message
        +-- TransientError     5xx, timeouts, connection resets: retry with back-off
        +-- MalformedResponse  not JSON, wrong shapes, an error object inside a 200
"""

from __future__ import annotations


class KeepaDealsError(Exception):
    """Root of every error keepa-deals raises on purpose."""


class ConfigError(KeepaDealsError):
    """A setting is missing or invalid; the message names the variable or option."""


class ScenarioError(KeepaDealsError):
    """A simulator scenario is invalid; the message names the key."""


class StorageError(KeepaDealsError):
    """A storage call failed; the message names the database (password redacted) and the cause."""


class DatabaseUnavailable(StorageError):
    """The database cannot be reached, opened or locked right now; the call wrote nothing, retry later."""


class KeepaError(KeepaDealsError):
    """Keepa answered with an error, or did not answer usably. ``envelope`` is set when known."""

    def __init__(self, message: str, *, status: int | None = None, envelope=None):
        super().__init__(message)
        self.status = status
        self.envelope = envelope


class NotEnoughTokens(KeepaError):
    """HTTP 429: the balance was <= 0. ``retry_after_ms`` is Keepa's refillIn plus 100 ms."""

    def __init__(self, message: str, *, retry_after_ms: int, status: int = 429, envelope=None):
        super().__init__(message, status=status, envelope=envelope)
        self.retry_after_ms = retry_after_ms


class BadKey(KeepaError):
    """HTTP 402: the key is wrong or expired; retrying will not help."""


class RequestRejected(KeepaError):
    """HTTP 400/404/405: Keepa refused the request; ``error_type`` is Keepa's error type."""

    def __init__(self, message: str, *, error_type: str = "", status: int = 400, envelope=None):
        super().__init__(message, status=status, envelope=envelope)
        self.error_type = error_type


class TransientError(KeepaError):
    """5xx, a timeout or a reset connection: retry with back-off."""


class MalformedResponse(KeepaError):
    """The response was not what Keepa sends: not JSON, a wrong shape, or an error inside a 200."""
