"""Method name -> typed handler; one decoded request in, one reply out. Shared by stream and datagram RPC.

The router never raises for bad input: unknown method, undecodable or wrong-typed payload, tensor
inconsistencies (``bad_request``), a deadline already passed or passed while running
(``deadline_exceeded``), a handler's own failure (``internal``, logged). Every error is counted.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, NamedTuple, TypeVar

import msgspec
import trio

from tesseract.net.errors import FrameTooLarge, RemoteError, TensorError
from tesseract.net.messages import (
    ErrorCode,
    ErrorReply,
    Request,
    Response,
    deadline_is_valid,
    decode_payload,
    error_reply,
)

logger = logging.getLogger(__name__)

Req = TypeVar("Req")
Handler = Callable[[Any, str], Awaitable[Any]]

#: The longest any handler may run, whatever deadline its caller sent.
DEFAULT_MAX_HANDLER_TIME = 600.0

#: Exceptions that mean "the payload is wrong", answered with ErrorCode.BAD_REQUEST.
BAD_INPUT_ERRORS = (msgspec.ValidationError, msgspec.DecodeError, TensorError)


class Method(NamedTuple):
    request_type: type
    handler: Handler


class Router:
    """Method name -> (request type, handler). Handlers get ``(request, peer_address)``.

    A handler returns the reply payload (a msgspec struct) or raises ``RemoteError`` to send a typed
    error. The error's code travels as it is if it is one of ``ErrorCode`` or of ``error_codes`` (the
    codes the layer above defines for its own errors, e.g. the server's ``not_found``); any other
    code becomes ``ErrorCode.INTERNAL``. ``error_types`` maps the exceptions of the layers below the
    handlers to codes (the runtime's ``InvalidBatch`` to ``bad_request``), so those layers raise
    their own errors and know nothing of the wire; any other exception is ``internal`` and logged.
    """

    def __init__(
        self,
        *,
        max_handler_time: float = DEFAULT_MAX_HANDLER_TIME,
        error_codes: Iterable[str] = (),
        error_types: Mapping[type[Exception], str] | None = None,
    ) -> None:
        self._methods: dict[str, Method] = {}
        self.max_handler_time = max_handler_time
        self.error_codes = frozenset(ErrorCode._value2member_map_) | {str(code) for code in error_codes}
        self.error_types = tuple((error_type, str(code)) for error_type, code in (error_types or {}).items())
        #: Counts of what went wrong, by error code (plus transport-level events).
        self.stats: Counter[str] = Counter()
        #: Called after each request a handler ran: (method, seconds it took, error code or None).
        #: For metrics (the simulator's reports); it must not raise.
        self.on_request: Callable[[str, float, str | None], None] | None = None

    def add(self, name: str, request_type: type[Req], handler: Callable[[Req, str], Awaitable[Any]]) -> None:
        if name in self._methods:
            raise ValueError(f"method {name!r} is already registered")
        self._methods[name] = Method(request_type, handler)

    async def handle(self, request: Request, payload: memoryview, peer: str) -> tuple[Any, Any]:
        """Run one request; return ``(envelope, payload)`` for the reply. Never raises for bad input."""
        method = self._methods.get(request.method)
        if method is None:
            return self.error(request.id, ErrorCode.UNKNOWN_METHOD, f"no method {request.method!r}"), None
        if not deadline_is_valid(request.timeout):
            message = f"deadline already passed (timeout {request.timeout})"
            return self.error(request.id, ErrorCode.DEADLINE_EXCEEDED, message), None
        try:
            arguments = decode_payload(method.request_type, payload)
        except BAD_INPUT_ERRORS as exc:
            return self.error(request.id, ErrorCode.BAD_REQUEST, f"{request.method}: {exc}"), None
        if self.on_request is not None:
            return await self._handle_observed(method, request, arguments, peer)
        return await self._run(method, request, arguments, peer)

    async def _handle_observed(
        self, method: Method, request: Request, arguments: Any, peer: str
    ) -> tuple[Any, Any]:
        started = trio.current_time()
        envelope, result = await self._run(method, request, arguments, peer)
        if self.on_request is not None:
            code = envelope.code if isinstance(envelope, ErrorReply) else None
            self.on_request(request.method, trio.current_time() - started, code)
        return envelope, result

    async def _run(self, method: Method, request: Request, arguments: Any, peer: str) -> tuple[Any, Any]:
        with trio.move_on_after(min(request.timeout, self.max_handler_time)) as scope:
            try:
                result = await method.handler(arguments, peer)
            except RemoteError as exc:
                code = exc.code if exc.code in self.error_codes else ErrorCode.INTERNAL
                return self.error(request.id, code, exc.message), None
            except BAD_INPUT_ERRORS as exc:
                return self.error(request.id, ErrorCode.BAD_REQUEST, f"{request.method}: {exc}"), None
            except Exception as exc:
                for error_type, code in self.error_types:
                    if isinstance(exc, error_type):
                        return self.error(request.id, code, str(exc)), None
                logger.exception("handler %s failed for %s", request.method, peer)
                return self.error(request.id, ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}"), None
        if scope.cancelled_caught:
            return self.error(
                request.id, ErrorCode.DEADLINE_EXCEEDED, f"{request.method} ran past its deadline"
            ), None
        return Response(request.id), result

    def error(self, request_id: int, code: str, message: str) -> ErrorReply:
        """An error reply, counted in ``stats``."""
        self.stats[str(code)] += 1
        return error_reply(request_id, code, message)


def encode_reply(router: Router, envelope: Any, payload: Any, encode: Callable[..., bytearray], **limit: int):
    """Encode a reply; a reply that cannot be sent becomes a typed error instead (never an exception)."""
    try:
        return encode(envelope, payload, **limit)
    except FrameTooLarge as exc:
        error = router.error(envelope.id, ErrorCode.FRAME_TOO_LARGE, f"reply too large: {exc}")
    except (TypeError, ValueError, msgspec.EncodeError) as exc:
        logger.error("cannot encode the reply to request %d: %s", envelope.id, exc)
        error = router.error(envelope.id, ErrorCode.INTERNAL, f"the handler's reply cannot be encoded: {exc}")
    return encode(error, None, **limit)
