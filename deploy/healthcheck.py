"""The container image's HEALTHCHECK: GET /v2/health/ready on the address and HTTP port the
server (PID 1 in the container) was started with, so `--http-port 9000` needs no second flag.
Exit status 0 when it answers 200, 1 otherwise. PYSERVER_HEALTH_URL replaces the URL."""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def server_address(argv: list[str]) -> tuple[str, int]:
    """(host, port) from `pyserver serve` arguments, the last of each flag winning as in
    argparse; a wildcard address is asked on the loopback."""
    host, port = "127.0.0.1", 8000
    values: dict[str, str] = {}
    for i, arg in enumerate(argv):
        for flag in ("--http-port", "--host", "--http-address"):
            if arg == flag and i + 1 < len(argv):
                values["host" if flag != "--http-port" else "port"] = argv[i + 1]
            elif arg.startswith(flag + "="):
                values["host" if flag != "--http-port" else "port"] = arg[len(flag) + 1:]
    if values.get("port", "").isdigit():
        port = int(values["port"])
    given = values.get("host", "0.0.0.0")
    if given in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif given == "::":
        host = "[::1]"
    elif ":" in given:
        host = f"[{given}]"
    else:
        host = given
    return host, port


def main() -> int:
    url = os.environ.get("PYSERVER_HEALTH_URL")
    if not url:
        try:
            with open("/proc/1/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except OSError:
            argv = []
        host, port = server_address(argv)
        url = f"http://{host}:{port}/v2/health/ready"
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            ok = response.status == 200
    except (urllib.error.URLError, OSError) as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1
    print(f"{url}: {'ready' if ok else 'not ready'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
