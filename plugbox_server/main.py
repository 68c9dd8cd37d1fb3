"""The `plugbox` executable: the machine-facing mode without typer, else the CLI."""

import sys

# The code below this line is what a python3 older than plugbox needs must still run.
if sys.version_info < (3, 11):
    sys.stderr.write("plugbox: plugbox needs python3 3.11 or newer; this host's python3 is %s; "
                     "install a newer python3 on the host\n" % sys.version.split()[0])
    sys.exit(1)


def main() -> None:
    if sys.argv[1:2] == ["--serve"]:
        from plugbox_server import serve

        sys.exit(serve.main(sys.argv[2:]))
    if sys.argv[1:2] == ["--relay"]:
        from plugbox_server import relay

        sys.exit(relay.main(sys.argv[2:]))
    from plugbox_server.cli import main as cli

    cli()
