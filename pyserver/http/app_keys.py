"""Typed keys for values stored on the aiohttp application."""

from __future__ import annotations

from aiohttp import web

MAX_REQUEST_SIZE = web.AppKey("max_request_size", int)
