"""The one error hierarchy of trio-rocketmq.

Rules:
- Every error raised across a module boundary is a ``RocketError``.
- ``retriable`` says whether trying again (possibly elsewhere) can succeed.
- Server answers map to ``ServerError`` subclasses through ``SERVER_ERRORS`` only; code that
  needs a class for a response code calls ``error_for_response``.
"""

from __future__ import annotations

from protocol.codes import ResponseCode


class RocketError(Exception):
    """Root of every error this project raises on purpose."""

    retriable: bool = False


# --- wire -------------------------------------------------------------------------------


class ProtocolError(RocketError):
    """Bytes that do not form a valid RocketMQ remoting frame or header."""


class FrameTooLarge(ProtocolError):
    """A frame announced a length over the configured cap; nothing was allocated for it."""


class MalformedHeader(ProtocolError):
    """A frame header could not be decoded (bad JSON, bad binary layout, wrong types)."""


class MissingHeaderField(ProtocolError):
    """A request lacks an ext field that its header class requires."""


class InvalidHeaderField(ProtocolError):
    """An ext field is present but its value cannot be parsed as the declared type."""


class MalformedRecord(ProtocolError):
    """Bytes that are not a valid message record or message batch."""


class MalformedBody(ProtocolError):
    """A JSON or CBOR body that does not have the expected shape or version."""


class LimitExceeded(ProtocolError):
    """A well-formed request over a configured limit (topics, queues, items, bytes)."""


# --- transport ----------------------------------------------------------------------------


class NetworkError(RocketError):
    """A connection could not be made or was lost."""

    retriable = True


class ConnectionLost(NetworkError):
    """The connection closed while a call was in flight; its outcome is unknown."""


class RemotingTimeout(RocketError):
    """No answer before the deadline; the request may or may not have been processed."""

    retriable = True


# --- server answers -----------------------------------------------------------------------


class ServerError(RocketError):
    """A server answered with a non-success response code."""

    code: int = ResponseCode.SYSTEM_ERROR

    def __init__(self, remark: str | None = None, *, code: int | None = None) -> None:
        if code is not None:
            self.code = code
        self.remark = remark or ""
        try:
            name = ResponseCode(self.code).name
        except ValueError:
            name = str(self.code)
        super().__init__(f"{name} ({self.code}): {self.remark}" if self.remark else name)


class SystemError_(ServerError):
    """The server failed in a way it did not classify (SYSTEM_ERROR)."""

    code = ResponseCode.SYSTEM_ERROR
    retriable = True


class SystemBusy(ServerError):
    """The server is shedding load (SYSTEM_BUSY); retry on another broker."""

    code = ResponseCode.SYSTEM_BUSY
    retriable = True


class RequestCodeNotSupported(ServerError):
    """The server does not serve this request code."""

    code = ResponseCode.REQUEST_CODE_NOT_SUPPORTED


class MessageIllegal(ServerError):
    """The message is too large, its topic or properties are invalid."""

    code = ResponseCode.MESSAGE_ILLEGAL


class ServiceNotAvailable(ServerError):
    """The broker cannot take this request now (shutting down, slave, fenced, disk full)."""

    code = ResponseCode.SERVICE_NOT_AVAILABLE
    retriable = True


class NoPermission(ServerError):
    """Topic or broker permissions deny the operation."""

    code = ResponseCode.NO_PERMISSION
    retriable = True


class TopicNotExist(ServerError):
    """The topic has no route (NameServer) or no config (broker)."""

    code = ResponseCode.TOPIC_NOT_EXIST
    retriable = True


class TopicExistAlready(ServerError):
    """The topic exists already."""

    code = ResponseCode.TOPIC_EXIST_ALREADY


class QueryNotFound(ServerError):
    """Nothing matched the query (offset, key, message id)."""

    code = ResponseCode.QUERY_NOT_FOUND


class SubscriptionGroupNotExist(ServerError):
    """The consumer group is unknown and auto-creation is off."""

    code = ResponseCode.SUBSCRIPTION_GROUP_NOT_EXIST


class InvalidParameter(ServerError):
    """A request argument is out of range (queue id, offset, size)."""

    code = ResponseCode.INVALID_PARAMETER


class ControllerNotLeader(ServerError):
    """This controller is not the Raft leader; the remark names the leader when known."""

    code = ResponseCode.CONTROLLER_NOT_LEADER
    retriable = True


#: The one table from response code to error class.
SERVER_ERRORS: dict[int, type[ServerError]] = {
    cls.code: cls
    for cls in (
        SystemError_,
        SystemBusy,
        RequestCodeNotSupported,
        MessageIllegal,
        ServiceNotAvailable,
        NoPermission,
        TopicNotExist,
        TopicExistAlready,
        QueryNotFound,
        SubscriptionGroupNotExist,
        InvalidParameter,
        ControllerNotLeader,
    )
}


def error_for_response(code: int, remark: str | None) -> ServerError:
    """Build the error for a non-success response ``code`` (unknown codes: ``ServerError``)."""
    cls = SERVER_ERRORS.get(code)
    if cls is None:
        return ServerError(remark, code=code)
    return cls(remark)


# --- storage ------------------------------------------------------------------------------


class StorageError(RocketError):
    """The store cannot do what was asked of it."""


class TruncatedTail(StorageError):
    """The end of a log holds a partial record (torn write); it can be cut off safely."""


class CorruptRecord(StorageError):
    """A record before the tail fails its checks; the store refuses to guess."""


class DiskFull(StorageError):
    """No space left to append; the store stays readable."""
