"""gunicorn's settings, read by every master from HOME/live/gunicorn.conf.py.

bin/start gives gunicorn nothing but paths through HOME/live, and a re-exec
(bin/refresh) repeats that command line: so a new master reads the settings, the
code and the virtualenv of the version live at that moment. Paths here are
absolute, under HOME, so that they do not depend on a version directory.
"""

import os

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
