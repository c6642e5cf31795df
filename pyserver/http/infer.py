"""POST /v2/models/{m}[/versions/{v}]/infer, without a task per request.

When the headers are in, the data plane admits the request (or refuses it, e.g. with 503 for a
full queue, before its body is read). When the body is in, it is decompressed if it says so,
decoded straight into the core's request (binary tensors stay views of the body) and queued;
the answer is encoded and written from the completion callback. Only large bodies take a detour
through a worker thread for (de)compression.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from pyserver.dataplane import Admission, DataPlane, InferResponse
from pyserver.errors import ServerError
from pyserver.http.protocol import Slot
from pyserver.http.wire import JSON, OCTET_STREAM, Response
from pyserver.logs import CURRENT_REQUEST, bind_request_id
from pyserver.protocol.codec import InferRequest, decode_request, encode_response
from pyserver.protocol.compression import compress, decompress
from pyserver.types import ModelSignature

HEADER_LENGTH = "inference-header-content-length"
# Smaller answers go uncompressed whatever Accept-Encoding says (identity is always acceptable):
# compressing a few hundred bytes costs more CPU than it saves on the wire.
COMPRESS_FROM = 1024
# (De)compressing more than this runs in a worker thread rather than on the event loop.
OFF_LOOP_FROM = 256 * 1024


class InferStream:
    """The inference route's StreamHandler (pyserver/http/protocol.py)."""

    def __init__(self, dataplane: DataPlane, max_request_size: int) -> None:
        self._dp = dataplane
        self._max_request_size = max_request_size

    def begin(self, slot: Slot, match_info: dict[str, str], headers: dict[str, str]) -> Admission:
        # Counted as accepted by the version from here until release().
        return self._dp.admit(match_info["model"], match_info.get("version"))

    def abort(self, slot: Slot, state: object) -> None:
        assert isinstance(state, Admission)
        state.release()

    def finish(self, slot: Slot, state: object, body: bytes, headers: dict[str, str]) -> None:
        admission = state
        assert isinstance(admission, Admission)
        encoding = headers.get("content-encoding")
        if encoding is not None:
            if len(body) >= OFF_LOOP_FROM:
                slot.task = slot.loop.create_task(
                    self._inflate_then_submit(slot, admission, body, headers, encoding))
                return
            try:
                body = decompress(body, encoding, self._max_request_size)
            except ServerError as exc:
                self._failed(slot, admission, exc)
                return
        self._submit(slot, admission, body, headers)

    async def _inflate_then_submit(self, slot: Slot, admission: Admission, body: bytes,
                                   headers: dict[str, str], encoding: str) -> None:
        loop = asyncio.get_running_loop()
        try:
            body = await loop.run_in_executor(
                None, decompress, body, encoding, self._max_request_size)
        except ServerError as exc:
            self._failed(slot, admission, exc)
            return
        except asyncio.CancelledError:
            admission.release()
            raise
        slot.task = None
        self._submit(slot, admission, body, headers)

    def _failed(self, slot: Slot, admission: Admission, exc: ServerError) -> None:
        admission.fail()
        admission.release()
        slot.fail(exc)

    def _submit(self, slot: Slot, admission: Admission, body: bytes,
                headers: dict[str, str]) -> None:
        header_length = headers.get(HEADER_LENGTH)

        def decode(signature: ModelSignature) -> InferRequest:
            decoded = decode_request(body, header_length, signature)
            if decoded.id is not None:
                bind_request_id(decoded.id)  # this request's log lines carry the client's id
            return decoded

        def done(response: InferResponse | None, error: ServerError | None) -> None:
            admission.release()
            token = CURRENT_REQUEST.set(slot.context)
            try:
                if error is not None:
                    slot.fail(error)
                else:
                    assert response is not None
                    self._answer(slot, response, headers.get("accept-encoding"))
            except Exception as exc:  # an encoding failure: this request's 500, nobody else's
                slot.fail(exc)
            finally:
                CURRENT_REQUEST.reset(token)

        try:
            request_id = self._dp.start_infer(admission, decode, done)
        except Exception as exc:
            admission.release()
            slot.fail(exc)
            return
        slot.cancel = _canceller(self._dp, admission, request_id)

    def _answer(self, slot: Slot, response: InferResponse, accept: str | None) -> None:
        chunks, json_length = encode_response(
            response.signature, response.model_version, response.request, response.results)
        extra: list[tuple[str, str]]
        if json_length is None:  # every output in the JSON: one chunk
            content_type, extra, size = JSON, [], memoryview(chunks[0]).nbytes
        else:
            content_type = OCTET_STREAM
            extra = [("Inference-Header-Content-Length", str(json_length))]
            size = json_length
            for chunk in chunks[1:]:
                size += chunk.nbytes  # type: ignore[attr-defined]  # numpy views, memoryviews
        if accept is not None and size >= COMPRESS_FROM:
            if size >= OFF_LOOP_FROM:
                slot.task = slot.loop.create_task(
                    _compress_then_answer(slot, chunks, accept, content_type, extra))
                return
            chunks, used = compress(chunks, accept)
            if used is not None:
                extra.append(("Content-Encoding", used))
                size = memoryview(chunks[0]).nbytes  # compress's one chunk
        slot.answer(Response(200, chunks, content_type, extra, size))


async def _compress_then_answer(slot: Slot, chunks: list[Any], accept: str, content_type: bytes,
                                extra: list[tuple[str, str]]) -> None:
    compressed, used = await asyncio.get_running_loop().run_in_executor(
        None, compress, chunks, accept)
    if used is not None:
        extra.append(("Content-Encoding", used))
    slot.answer(Response(200, compressed, content_type, extra))


def _canceller(dp: DataPlane, admission: Admission, request_id: int) -> Callable[[], None]:
    def cancel() -> None:
        dp.cancel_infer(admission, request_id)
        admission.release()

    return cancel
