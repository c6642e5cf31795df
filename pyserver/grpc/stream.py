"""ModelStreamInfer: a bidirectional stream of inference requests, answered on the stream.

Requests on one stream run concurrently, not one after another: a reader task takes each
request off the stream and starts it at once (up to MAX_IN_FLIGHT per stream, then it stops
reading until one finishes), and each answer is written when it is ready, so answers may leave
in another order than their requests came; each carries its request's id. A request that fails
is answered with `error_message` (and its model, version and id), and the stream goes on.

The stream ends when the client has sent its last request and every answer is written. A client
that goes away cancels the handler: every request of its stream still queued leaves the queue
(counted CANCELED, never run), as an HTTP disconnect does. On shutdown the server stops reading
new requests from open streams, answers those it took, and closes the streams.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from pyserver.dataplane import DataPlane
from pyserver.errors import ServerError, internal_message
from pyserver.grpc import messages as pb
from pyserver.grpc.servicer import infer
from pyserver.logs import CURRENT_REQUEST, RequestContext
from pyserver.protocol.grpc_codec import encode_stream_error

log = logging.getLogger("pyserver.grpc")

# Requests of one stream in flight at once; beyond it the stream is not read until one is
# answered (HTTP/2 flow control then holds the client back).
MAX_IN_FLIGHT = 1024


class StreamServicer:
    def __init__(self, dataplane: DataPlane) -> None:
        self._dp = dataplane
        self._readers: set[asyncio.Task[None]] = set()
        self._closing = False

    def handler(self) -> grpc.RpcMethodHandler:
        return grpc.stream_stream_rpc_method_handler(
            self.model_stream_infer, request_deserializer=pb.ModelInferRequest.FromString,
            response_serializer=None,  # answers are bytes written by the codec
        )

    def close(self) -> None:
        """Shutting down: stop reading every open stream; each finishes what it took, then
        ends."""
        self._closing = True
        for reader in list(self._readers):
            reader.cancel()

    async def model_stream_infer(
        self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        answers: asyncio.Queue[bytes | None] = asyncio.Queue()
        in_flight: set[asyncio.Task[None]] = set()
        slots = asyncio.Semaphore(MAX_IN_FLIGHT)

        async def answer(message: Any) -> None:
            try:
                answers.put_nowait(await self._one(message, context))
            finally:
                slots.release()

        async def read() -> None:
            try:
                if self._closing:
                    return
                async for message in requests:
                    await slots.acquire()
                    task = loop.create_task(answer(message))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
            except asyncio.CancelledError:
                if not self._closing:
                    raise  # the client went away: the handler's cleanup cancels the rest
            finally:
                # Whatever ended the reading, the requests already taken are answered first.
                if in_flight:
                    await asyncio.gather(*in_flight, return_exceptions=True)
                answers.put_nowait(None)

        reader = loop.create_task(read())
        self._readers.add(reader)
        try:
            while (item := await answers.get()) is not None:
                yield item
            if not reader.cancelled():
                await reader  # a failure to read the stream ends it with that error
        finally:
            # Normally all done; when the client went away, this cancels the queued requests.
            self._readers.discard(reader)
            reader.cancel()
            for task in list(in_flight):
                task.cancel()

    async def _one(self, message: Any, context: grpc.aio.ServicerContext) -> bytes:
        """One request of the stream, to its answer: a response or an error, never a raise."""
        token = CURRENT_REQUEST.set(RequestContext())
        try:
            return await infer(self._dp, message, context, stream=True)
        except ServerError as exc:
            text = str(exc)
        except Exception as exc:  # a bug: this request's answer says so; the stream goes on
            log.exception("internal error in ModelStreamInfer")
            text = internal_message(exc)
        finally:
            CURRENT_REQUEST.reset(token)
        return encode_stream_error(text, message.model_name, message.model_version, message.id)
