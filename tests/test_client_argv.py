"""The ssh and rsync argument lists plug builds, compared by equality."""

import shlex

import pytest

from plugbox_client import argv as A

CP = "/tmp/plug-x/master"


def test_ssh_base_puts_control_path_first_then_extra_then_jumps():
    # ssh keeps the first value of an option: a ControlPath in the extra options must
    # not win over plug's own, or `ssh -O exit` could not reach the master.
    assert A.ssh_base(CP) == ["ssh", "-o", f"ControlPath={CP}"]
    assert A.ssh_base(CP, ("bastion", "admin@inner:2222"), ["-F", "cfg", "-o", "ControlPath=none"]) == [
        "ssh", "-o", f"ControlPath={CP}", "-F", "cfg", "-o", "ControlPath=none",
        "-J", "bastion,admin@inner:2222"]


def test_master_open_run_close():
    base = A.ssh_base(CP, extra=["-o", "ControlMaster=auto"])
    assert A.ssh_open(base, "hello@host") == [
        "ssh", "-o", "ControlMaster=yes", "-o", "ControlPersist=yes", *base[1:],
        "-f", "-N", "--", "hello@host"]
    assert A.ssh_close(base, "hello@host") == [*base, "-O", "exit", "--", "hello@host"]
    assert A.ssh_run(base, "hello@host", ["echo", "a b"]) == [
        "ssh", "-o", "ControlMaster=no", *base[1:], "--", "hello@host", "echo 'a b'"]


def test_remote_command_is_one_argument_that_splits_back_exactly():
    nasty = ["rollback-to", "x; rm -rf / $(reboot) `id` 'q' \"d\""]
    user = "eve'; reboot; '"
    argv = A.ssh_run(A.ssh_base(CP), "h", A.remote_plugbox("/srv/my home", nasty, user))
    assert argv[-2] == "h"
    assert shlex.split(argv[-1]) == ["sh", "-c", A.FIND_PLUGBOX, "plugbox", "/srv/my home", "plug",
                                     user, "--home", "/srv/my home", *nasty]


def test_remote_plugbox_without_home_lets_the_host_use_its_home():
    assert A.remote_plugbox(None, ["status", "--json"], "alice") == [
        "sh", "-c", A.FIND_PLUGBOX, "plugbox", "", "plug", "alice", "status", "--json"]


def test_plugbox_args_put_home_first():
    assert A.plugbox_args("/h", ["log"]) == ["--home", "/h", "log"]
    assert A.plugbox_args(None, ["log"]) == ["log"]


def test_remote_install():
    assert A.remote_install("/h") == ["sh", "-c", A.INSTALL_PLUGBOX, "plug-bootstrap", "/h"]
    assert A.remote_install(None)[-1] == ""


def test_rsync_rsh_rides_the_master_and_keeps_quoting():
    base = A.ssh_base("/tmp/dir with space/master", (), ["-F", "/a b/cfg"])
    rsh = A.rsync_rsh(base)
    assert shlex.split(rsh) == ["ssh", "-o", "ControlMaster=no", *base[1:]]


def test_version_path_and_destination():
    assert A.version_path("/srv/hello", "20261121T090000Z") == "/srv/hello/deploy/20261121T090000Z/"
    assert A.destination("hello@host", "/srv/x/") == "hello@host:/srv/x/"
    assert A.destination(None, "/srv/x/") == "/srv/x/"


FILTERS = ["--filter=P /previous", "--filter=P /next", "--filter=P /.plugbox", "--include=/plugbox.toml"]
HEAD = ["rsync", "-a", "--delete", "--modify-window=-1", "-ii", "--out-format=%i %l %n%L", "--stats"]


def test_rsync_upload_local_first_deploy():
    assert A.rsync_upload(["/s/plugbox.toml", "/p/app"], "/h/deploy/V/") == [
        *HEAD, *FILTERS, "--", "/s/plugbox.toml", "/p/app", "/h/deploy/V/"]


def test_rsync_upload_over_ssh_with_everything():
    assert A.rsync_upload(
        ["/s/plugbox.toml", "/p/dist/"], "h:/h/deploy/V/", link_dest="../L", shared=("media", "var/log"),
        exclude=("*.pyc", ".git"), rsh="ssh -o ControlPath=/c", dry_run=True,
    ) == [
        *HEAD, "--protect-args", "-e", "ssh -o ControlPath=/c", "--dry-run", "--link-dest=../L", *FILTERS,
        "--exclude=/media", "--exclude=/var/log", "--exclude=*.pyc", "--exclude=.git",
        "--", "/s/plugbox.toml", "/p/dist/", "h:/h/deploy/V/",
    ]


def test_protections_come_before_the_users_excludes():
    argv = A.rsync_upload(["/s"], "/d/", exclude=("*",), shared=("media",))
    order = [argv.index(a) for a in ("--filter=P /previous", "--filter=P /next", "--filter=P /.plugbox",
                                      "--include=/plugbox.toml",
                                      "--exclude=/media", "--exclude=*")]
    assert order == sorted(order)


@pytest.mark.parametrize("environ, extra", [
    ({}, []),
    ({"PLUG_SSH_CONFIG": "/t/ssh config"}, ["-F", "/t/ssh config"]),
    ({"PLUG_SSH_OPTIONS": "-p 2222 -i '/t/my key' -o StrictHostKeyChecking=yes"},
     ["-p", "2222", "-i", "/t/my key", "-o", "StrictHostKeyChecking=yes"]),
    ({"PLUG_SSH_CONFIG": "c", "PLUG_SSH_OPTIONS": "-v"}, ["-F", "c", "-v"]),
    ({"PLUG_SSH_CONFIG": ""}, []),
])
def test_ssh_extra_from_the_environment(environ, extra):
    assert A.ssh_extra(environ) == extra
