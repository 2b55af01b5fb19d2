"""stagecraft_http: blocking HTTP(S) requests from a Stagecraft phase written in Python.

    import stagecraft_http

    response = stagecraft_http.get("https://status.example.com/health")
    if not response.is_success():
        ...
    text = response.text()

    stagecraft_http.request(
        "POST",
        "https://api.example.com/deploys",
        headers=[("content-type", "application/json")],
        body=b'{"version": "v2"}',
        timeout=10,
    )

A request goes through the host's `wasi:http/outgoing-handler`, which sends it only to an origin
listed in the phase's `net` grant (and never to a loopback or private address a name resolves
to, unless the grant writes that address). Anything else raises `HttpError`, whose message is
the host's reason and names the grant to add:

    http://127.0.0.1:8080/ok: network access refused: http://127.0.0.1:8080 is not in this
    phase's net grant; add "http://127.0.0.1:8080" to the phase's [phases.<name>.grants] net
    to allow it

A response with any status (404, 503) is a `Response`, not an error. The host caps request and
response bodies at 16 MiB and ends every request at the phase's deadline.

Each step blocks on its pollable (`.block()`): there is no event loop, and none is needed. The
module uses the bindings componentize-py generates for the `phase-plugin` world of
stagecraft:phase@0.1.1 or later (`wit_world.imports.outgoing_handler`, `wasi_http_types`,
`streams`); it cannot be imported by a plugin built for 0.1.0, whose world has no wasi:http.
It is plain Python: copy it next to your `app.py` (`stagecraft plugin new --lang python` does).
"""

import re
from dataclasses import dataclass
from typing import Iterable, List, Optional, Tuple, Union
from urllib.parse import urlsplit

from componentize_py_types import Err
from wit_world.imports import outgoing_handler, streams
from wit_world.imports import wasi_http_types as http

#: The most of a response body `request` reads unless told otherwise (the host's cap).
MAX_BODY = 16 * 1024 * 1024

# blocking-write-and-flush takes at most 4096 bytes a call.
_WRITE_CHUNK = 4096
_READ_CHUNK = 64 * 1024

_METHODS = {
    "GET": http.Method_Get,
    "HEAD": http.Method_Head,
    "POST": http.Method_Post,
    "PUT": http.Method_Put,
    "DELETE": http.Method_Delete,
    "PATCH": http.Method_Patch,
    "OPTIONS": http.Method_Options,
}


class HttpError(Exception):
    """A request that produced no response. `str(error)` is `<url>: <reason>`, the reason in the
    host's own words when it refused the request."""


@dataclass
class Response:
    status: int
    #: (name, value) pairs, names in lower case, in the order received.
    headers: List[Tuple[str, str]]
    body: bytes

    def header(self, name: str) -> Optional[str]:
        """The first header of that name (case-insensitive), or None."""
        name = name.lower()
        return next((v for n, v in self.headers if n == name), None)

    def text(self) -> str:
        """The body as text (invalid UTF-8 replaced)."""
        return self.body.decode("utf-8", errors="replace")

    def is_success(self) -> bool:
        """A 2xx status."""
        return 200 <= self.status < 300


def get(
    url: str, headers: Iterable[Tuple[str, str]] = (), timeout: Optional[float] = None
) -> Response:
    """`GET url`; see `request`."""
    return request("GET", url, headers=headers, timeout=timeout)


def request(
    method: str,
    url: str,
    headers: Iterable[Tuple[str, Union[str, bytes]]] = (),
    body: bytes = b"",
    timeout: Optional[float] = None,
    max_body: int = MAX_BODY,
) -> Response:
    """Send one request and read the whole response.

    `headers` are (name, value) pairs; `body` is sent as it is (set content-type yourself).
    `timeout` (seconds) bounds connecting and the wait for the response to begin; the phase's
    deadline applies in any case. A body longer than `max_body` bytes is an error.

    Raises `HttpError` when there is no response: refused by the host (not in the `net` grant),
    the name does not resolve, the connection fails, TLS fails, a timeout or a cap is hit.
    """
    scheme, authority, path = _split(url)
    try:
        fields = http.Fields.from_list(
            [(name, value.encode() if isinstance(value, str) else value) for name, value in headers]
        )
    except Err as e:
        raise HttpError(f"{url}: a header cannot be sent: {_variant(e.value)}") from None
    outgoing = http.OutgoingRequest(fields)
    verb = method.upper()
    wit_method = _METHODS[verb]() if verb in _METHODS else http.Method_Other(verb)
    _set(url, "method", outgoing.set_method, wit_method)
    _set(url, "scheme", outgoing.set_scheme, scheme)
    _set(url, "host", outgoing.set_authority, authority)
    _set(url, "path", outgoing.set_path_with_query, path)
    options = None
    if timeout is not None:
        options = http.RequestOptions()
        nanos = max(0, int(timeout * 1_000_000_000))
        options.set_connect_timeout(nanos)
        options.set_first_byte_timeout(nanos)

    outgoing_body = outgoing.body()
    try:
        future = outgoing_handler.handle(outgoing, options)
    except Err as e:
        raise HttpError(f"{url}: {_describe(e.value)}") from None
    with future:
        try:
            _write_body(outgoing_body, body)
        except HttpError as e:
            # The host ends a request whose body it refuses (a cap): the response's error says
            # why better than the closed stream does.
            _await(future, url)
            raise HttpError(f"{url}: {e}") from None
        with _await(future, url) as response:
            return _read(response, url, max_body)


def _split(url: str):
    """`scheme://authority/path?query` as wasi:http wants it."""
    parts = urlsplit(url)
    if parts.scheme == "http":
        scheme = http.Scheme_Http()
    elif parts.scheme == "https":
        scheme = http.Scheme_Https()
    else:
        raise HttpError(f"{url!r} is not a URL: only http:// and https:// can be requested")
    if not parts.netloc or "@" in parts.netloc:
        raise HttpError(f"{url!r} is not a URL: it needs a host (and no user or password)")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return scheme, parts.netloc, path


def _set(url, what, setter, value):
    try:
        setter(value)
    except Err:
        raise HttpError(f"{url}: invalid {what}") from None


def _write_body(outgoing_body, body: bytes):
    with outgoing_body.write() as stream:
        for start in range(0, len(body), _WRITE_CHUNK):
            try:
                stream.blocking_write_and_flush(body[start : start + _WRITE_CHUNK])
            except Err as e:
                raise HttpError(_stream_error("sending the request body", e.value)) from None
    try:
        http.OutgoingBody.finish(outgoing_body, None)
    except Err as e:
        raise HttpError(_describe(e.value)) from None


def _await(future, url):
    """Block until the response (status and headers) is in; the response, or HttpError."""
    with future.subscribe() as ready:
        ready.block()
    got = future.get()
    if got is None or isinstance(got, Err):
        raise HttpError(f"{url}: the response was lost")
    if isinstance(got.value, Err):
        raise HttpError(f"{url}: {_describe(got.value.value)}")
    return got.value.value


def _read(response, url, max_body) -> Response:
    status = response.status()
    with response.headers() as fields:
        headers = [(n.lower(), v.decode("utf-8", errors="replace")) for n, v in fields.entries()]
    chunks = []
    size = 0
    with response.consume() as incoming:
        with incoming.stream() as stream:
            while True:
                try:
                    chunk = stream.blocking_read(_READ_CHUNK)
                except Err as e:
                    if isinstance(e.value, streams.StreamError_Closed):
                        break
                    why = _stream_error("reading the response", e.value)
                    raise HttpError(f"{url}: {why}") from None
                size += len(chunk)
                if size > max_body:
                    raise HttpError(f"{url}: the response body is larger than {max_body} bytes")
                chunks.append(chunk)
    return Response(status=status, headers=headers, body=b"".join(chunks))


def _stream_error(doing: str, error) -> str:
    if isinstance(error, streams.StreamError_Closed):
        return f"{doing}: the connection closed"
    code = http.http_error_code(error.value)
    return f"{doing}: {_describe(code) if code is not None else error.value.to_debug_string()}"


def _describe(code) -> str:
    """What a wasi:http `error-code` says, in words; a refusal by the host carries its reason."""
    if isinstance(code, http.ErrorCode_InternalError) and code.value:
        return code.value
    if isinstance(code, http.ErrorCode_DnsError):
        rcode = f" ({code.value.rcode})" if code.value.rcode else ""
        return f"the name could not be resolved{rcode}"
    if isinstance(code, http.ErrorCode_ConnectionRefused):
        return "the connection was refused"
    if isinstance(code, http.ErrorCode_ConnectionTimeout):
        return "connecting timed out"
    if isinstance(code, http.ErrorCode_HttpResponseTimeout):
        return "no response before the timeout"
    if isinstance(code, http.ErrorCode_HttpResponseBodySize) and code.value is not None:
        return f"the response body is larger than the host allows ({code.value} bytes)"
    if isinstance(code, http.ErrorCode_HttpRequestBodySize) and code.value is not None:
        return f"the request body is larger than the host allows ({code.value} bytes)"
    return _variant(code)


def _variant(value) -> str:
    """`ErrorCode_TlsCertificateError()` -> `tls certificate error`, with its payload if any."""
    name = type(value).__name__.split("_", 1)[-1]
    words = re.sub(r"(?<!^)(?=[A-Z])", " ", name).lower()
    payload = getattr(value, "value", None)
    return f"{words} ({payload})" if payload is not None else words
