"""Which aiokafka failures are worth retrying and which will never succeed.

The core retries ``TransientError`` with backoff and dead-letters ``PermanentError``;
this module is the one place that maps Kafka's error zoo onto those two.
"""

from __future__ import annotations

from aiokafka import errors as kafka_errors  # type: ignore[import-untyped]

from notifykit.transport import PermanentError, TransientError

__all__ = ["classify"]

#: Errors a resend cannot fix: the message, the topic or the credentials are wrong.
_PERMANENT: tuple[type[BaseException], ...] = (
    kafka_errors.MessageSizeTooLargeError,
    kafka_errors.RecordTooLargeError,
    kafka_errors.RecordListTooLargeError,
    kafka_errors.InvalidTopicError,
    kafka_errors.TopicAuthorizationFailedError,
    kafka_errors.ClusterAuthorizationFailedError,
    kafka_errors.TransactionalIdAuthorizationFailed,
    kafka_errors.AuthenticationFailedError,
    kafka_errors.SaslAuthenticationFailed,
    kafka_errors.UnsupportedSaslMechanismError,
    kafka_errors.AuthenticationMethodNotSupported,
    kafka_errors.CorruptRecordException,
    kafka_errors.UnsupportedForMessageFormatError,
    kafka_errors.PolicyViolationError,
    kafka_errors.InvalidRequiredAcksError,
    kafka_errors.UnsupportedVersionError,
)


def classify(exc: BaseException, where: str) -> TransientError | PermanentError:
    """The notifykit error for an aiokafka failure; ``where`` (a redacted URL or topic) names the peer.

    Anything not known to be permanent is transient: the core's retry budget
    (``retry_max_elapsed``) still dead-letters it in the end, so nothing is lost.
    """
    text = str(exc) or type(exc).__name__
    message = f"kafka {where}: {type(exc).__name__}: {text}"
    if isinstance(exc, _PERMANENT):
        return PermanentError(message)
    return TransientError(message)
