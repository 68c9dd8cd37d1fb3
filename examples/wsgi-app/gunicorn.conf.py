"""gunicorn's settings, read by every master from HOME/live/gunicorn.conf.py.

bin/start gives gunicorn nothing but paths through HOME/live, and a re-exec
(bin/refresh) repeats that command line: so a new master reads the settings, the
code and the virtualenv of the version live at that moment. Paths here are
absolute, under HOME, so that they do not depend on a version directory.
"""

import errno
import os
import socket
import time

home = os.environ["PLUGBOX_HOME"]

# config/ is the service's own configuration: plugbox never touches it.
try:
    with open(os.path.join(home, "config", "bind"), encoding="utf-8") as f:
        bind = [f.read().strip()]
except FileNotFoundError:
    bind = ["127.0.0.1:8000"]

wsgi_app = "app:application"
chdir = os.path.join(home, "live")  # the link itself: imports go through it
workers = 2

# Run by systemd with socket activation (see "Deploying a real web service" in the top README), gunicorn gets its socket
# from systemd (LISTEN_FDS), which also watches the process: it stays in the
# foreground. Run by bin/start, it is a daemon that bin/ finds by its pidfile.
supervised = "LISTEN_FDS" in os.environ
daemon = not supervised
pidfile = None if supervised else os.path.join(home, "shared", "run", "gunicorn.pid")
errorlog = os.path.join(home, "shared", "log", "gunicorn.log")
# Requests in flight when a master is told to stop get this long to finish.
graceful_timeout = 20
# gunicorn 25.1+ opens a control socket in a place shared by every gunicorn of the
# user; this service does not use it.
control_socket_disable = True


def on_starting(server):
    """A master started afresh binds as soon as the port is free, and not before.

    Run in the new master once it has loaded, just before it binds. The stop hook
    (bin/stop --no-wait) returns as soon as the old master has been told to stop,
    while its workers may still hold the listening socket to finish their requests:
    the wait is here, so that the new master loads meanwhile. (Were the port still
    taken, gunicorn would retry its bind once a second.) A re-exec (bin/refresh) and
    systemd hand the socket over, and wait for nothing.
    """
    if server.master_pid or supervised:
        return
    deadline = time.monotonic() + graceful_timeout + 5
    for address in bind:
        host, _, port = address.rpartition(":")
        if not port.isdigit():
            continue  # unix:PATH or fd://N: no port to wait for
        host = host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        waited = False
        while not port_free(family, host, int(port)) and time.monotonic() < deadline:
            if not waited:
                server.log.info("Waiting for %s: the master that is stopping still holds it", address)
                waited = True
            time.sleep(0.005)


def port_free(family, host, port):
    """Whether a socket can bind (host, port) now; an error other than "in use" says yes,
    and gunicorn's own bind then reports it."""
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as error:
            return error.errno != errno.EADDRINUSE
        return True
