"""A small WSGI service: GET /version answers the Plugbox version it runs from.

gunicorn imports this module through HOME/live; resolving our own path then gives
the version directory (deploy/NAME), whose name is the version. That is read once,
when a worker imports the module, and it stays true for the life of the worker. The
environment is no help here: after a re-exec (see bin/refresh) gunicorn hands the
new master the environment of the very first start, PLUGBOX_VERSION included.
"""

import os
from pathlib import Path

VERSION = Path(__file__).resolve().parent.name


def application(environ, start_response):
    if environ.get("PATH_INFO") == "/version":
        status, body = "200 OK", f"{VERSION}\n"
    else:
        status, body = "404 Not Found", "not found; try /version\n"
    data = body.encode()
    start_response(status, [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(data))),
        # Which gunicorn master this worker belongs to: bin/refresh retires the old
        # master only once the new one answers.
        ("X-Master-Pid", str(os.getppid())),
    ])
    return [data]
