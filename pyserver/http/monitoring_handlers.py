"""pyserver's monitoring endpoint (its own, not Triton's):

    GET /v2/models/{m}[/versions/{v}]/monitoring   -> the version's window of inputs and outputs
                                                      against its reference (pyserver/monitoring.py)

404 for an unknown model or version, and for one whose configuration monitors nothing.
"""

from __future__ import annotations

from aiohttp import web

from pyserver.dataplane import DataPlane
from pyserver.http.responses import json_response


class MonitoringHandlers:
    def __init__(self, dataplane: DataPlane) -> None:
        self._dp = dataplane

    async def monitoring(self, request: web.Request) -> web.Response:
        # A snapshot of the core's counts and a few hundred numbers to format: on the loop.
        info = request.match_info
        return json_response(self._dp.model_monitoring(info["model"], info.get("version")))

