"""The Fabric door: plugbox's deploy, rollback and status as tasks of a fabfile.

    from plugbox_client.fabric import Service
    service = Service()                     # reads plugbox.toml, as plug does
    deploy, rollback, status = service.tasks

gives `fab deploy [--message M]`, `fab rollback [--version V]` and `fab status`. Each
task calls the driver function that plug's own command calls (driver.deploy,
driver.rollback, driver.server_command), so it prints what plug prints and ends
with plug's exit status; the hosts are plugbox.toml's (`host` or `hosts`), reached
over plug's ssh, not Fabric's.

Prepare steps may also be Python functions, given the task's Fabric context to run
local commands (`c.run(...)`: `fab` without -H gives tasks a local context); they
run, in the order they were declared, before plugbox.toml's `prepare` lines:

    @service.prepare
    def assets(c):
        c.run("npm run build")

The hosts come from plugbox.toml alone: a task given a Fabric host (`fab -H`) refuses
in one line, since it would deploy once per host.

Needs Fabric (`pip install 'plugbox[fabric]'`); plug itself never imports this module.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

from invoke import Exit, UnexpectedExit, task

from plugbox_client import cli, config as cfg
from plugbox_server import protocol as P
from plugbox_server.errors import USAGE, PlugboxError


class Service:
    """The service a fabfile deploys: its plugbox.toml, and its Python prepare steps.

    `config`: the plugbox.toml (default: the nearest one upward from the fabfile's
    directory, as plug looks from the current one); `stage`: a [stages.NAME] of it.
    The file is read when a task runs, so a mistake in it is plug's one line there.
    """

    def __init__(self, config: str | Path | None = None, stage: str | None = None):
        caller = inspect.stack()[1].filename
        self.directory = Path(caller).resolve().parent if Path(caller).is_file() else Path.cwd()
        self.path = Path(config) if config is not None else None
        if self.path is not None and not self.path.is_absolute():
            self.path = self.directory / self.path
        self.stage = stage
        self.prepare_steps: list[Callable] = []

    def prepare(self, function: Callable) -> Callable:
        """Decorator: `function(c)` runs before plugbox.toml's prepare lines."""
        self.prepare_steps.append(function)
        return function

    def config(self) -> cfg.Config:
        return cfg.load_config(self.path, cwd=self.directory, stage=self.stage)

    @property
    def tasks(self):
        """(deploy, rollback, status): Fabric tasks for the fabfile's namespace."""
        service = self

        @task(help={"message": "Why: kept in the host's log with the version."})
        def deploy(c, message=None):
            """Deploy the project: build, upload, make live, as one transaction on each host (plug deploy)."""
            steps = tuple(_step(function, c) for function in service.prepare_steps)
            _leave(cli.reported(lambda: _print(service.driver().deploy(_local(c, service), message,
                                                                       prepare_steps=steps))))

        @task(help={"version": "The version to make live [default: live's previous]."})
        def rollback(c, version=None):
            """Make an earlier version live again, on every host (plug rollback)."""
            _leave(cli.reported(lambda: _print(service.driver().rollback(_local(c, service), version, False))))

        @task(help={"json": "Print the state as JSON."})
        def status(c, json=False):
            """List the versions on the host, or on every host (plug status)."""
            def run() -> int:
                loaded = _local(c, service)
                return service.driver().server_command(loaded, P.request("status", loaded.home,
                                                                         json=json or None))
            _leave(cli.reported(run))

        return deploy, rollback, status

    @staticmethod
    def driver():
        from plugbox_client import driver

        return driver


def _local(c, service: Service) -> cfg.Config:
    """The config, for a task run without a Fabric host."""
    if getattr(c, "host", None):
        raise PlugboxError(f"the plugbox tasks take their hosts from plugbox.toml, not from Fabric ({c.host})",
                           "run them without -H", code=USAGE)
    return service.config()


def _step(function: Callable, c) -> Callable[[], None]:
    """A prepare function, given the task's context; a local command that fails is one line."""
    def step() -> None:
        try:
            function(c)
        except UnexpectedExit as error:
            raise RuntimeError(f"`{error.result.command}` exited with {error.result.exited}") from None

    step.__name__ = getattr(function, "__name__", "prepare")  # what `==> prepare: NAME()` says
    return step


def _print(lines: list[str]) -> int:
    for line in lines:
        print(line, flush=True)
    return 0


def _leave(code: int) -> None:
    """Fabric exits with plug's status (plug's line is on stderr already)."""
    if code:
        raise Exit(code=code)

