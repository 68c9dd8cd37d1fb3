"""The ssh and rsync argument lists plug builds, compared by equality."""

import shlex

import pytest

from plugbox_client import argv as A
from plugbox_server import protocol

CP = "/tmp/plug-x/master"


def test_ssh_base_puts_control_path_first_then_extra_then_jumps():
    # ssh keeps the first value of an option: a ControlPath in the extra options must
    # not win over plug's own, or `ssh -O exit` could not reach the master.
    defaults = [a for option in A.CONNECTION_DEFAULTS for a in ("-o", option)]
    assert A.ssh_base(CP) == ["ssh", "-o", f"ControlPath={CP}", *defaults]
    assert A.ssh_base(CP, ("bastion", "admin@inner:2222"), ["-F", "cfg", "-o", "ControlPath=none"]) == [
        "ssh", "-o", f"ControlPath={CP}", "-F", "cfg", "-o", "ControlPath=none", *defaults,
        "-J", "bastion,admin@inner:2222"]


def test_ssh_base_reads_plugs_own_config_unless_the_user_names_one():
    # plug's file includes ~/.ssh/config first, so the user's settings win over its defaults.
    assert A.ssh_base(CP, (), ["-p", "2222"], "/pkg/ssh_config") == [
        "ssh", "-o", f"ControlPath={CP}", "-p", "2222", "-F", "/pkg/ssh_config"]
    assert "/pkg/ssh_config" not in A.ssh_base(CP, (), ["-F", "mine"], "/pkg/ssh_config")


def test_the_session_is_the_master_and_lives_no_longer_than_its_command():
    base = A.ssh_base(CP)
    argv = A.ssh_session(base, "hello@host", A.remote_serve("/srv/h", "alice"))
    assert argv[:5] == ["ssh", "-o", "ControlMaster=yes", "-o", "ControlPersist=no"]
    assert argv[-3:-1] == ["--", "hello@host"]
    assert shlex.split(argv[-1]) == ["sh", "-c", A.FIND_PLUGBOX, "plugbox", "/srv/h", "plug", "alice",
                                     *protocol.ARGS]


def test_what_rides_on_the_master_never_becomes_one():
    base = A.ssh_base(CP, extra=["-o", "ControlMaster=auto"])
    assert A.ssh_ride(base, "hello@host", ["echo", "a b"]) == [
        "ssh", "-o", "ControlMaster=no", *base[1:], "--", "hello@host", "echo 'a b'"]


def test_remote_command_is_one_argument_that_splits_back_exactly():
    nasty = ["rollback-to", "x; rm -rf / $(reboot) `id` 'q' \"d\""]
    user = "eve'; reboot; '"
    argv = A.ssh_ride(A.ssh_base(CP), "h", A.remote_plugbox("/srv/my home", nasty, user))
    assert argv[-2] == "h"
    assert shlex.split(argv[-1]) == ["sh", "-c", A.FIND_PLUGBOX, "plugbox", "/srv/my home", "plug",
                                     user, "--home", "/srv/my home", *nasty]


def test_remote_plugbox_without_home_lets_the_host_use_its_home():
    assert A.remote_plugbox(None, ["status", "--json"], "alice") == [
        "sh", "-c", A.FIND_PLUGBOX, "plugbox", "", "plug", "alice", "status", "--json"]


def test_plugbox_args_put_home_first():
    assert A.plugbox_args("/h", ["log"]) == ["--home", "/h", "log"]
    assert A.plugbox_args(None, ["log"]) == ["log"]


def test_remote_install_goes_to_the_login_unless_told_home():
    assert A.remote_install("/h") == ["sh", "-c", A.INSTALL_PLUGBOX, "plug-bootstrap", "/h", "login"]
    assert A.remote_install("/h", into_home=True) == ["sh", "-c", A.INSTALL_PLUGBOX, "plug-bootstrap", "/h", "home"]
    assert A.remote_install(None)[-2:] == ["", "login"]


def test_a_ride_with_a_terminal_asks_for_one():
    base = A.ssh_base(CP, ("bastion",), ["-p", "2222"])
    shell = A.remote_plugbox("/srv/my home", ["shell"], "alice")
    assert A.ssh_ride(base, "hello@host", shell, tty=True) == [
        "ssh", "-o", "ControlMaster=no", "-t", *base[1:], "--", "hello@host", shlex.join(shell)]


def test_rsync_rsh_rides_the_master_and_keeps_quoting():
    base = A.ssh_base("/tmp/dir with space/master", (), ["-F", "/a b/cfg"])
    rsh = A.rsync_rsh(base)
    assert shlex.split(rsh) == ["ssh", "-o", "ControlMaster=no", *base[1:]]


def test_destination():
    assert A.destination("hello@host", "/srv/x/") == "hello@host:/srv/x/"
    assert A.destination(None, "/srv/x/") == "/srv/x/"


FILTERS = ["--filter=P /previous", "--filter=P /next", "--filter=P /.plugbox", "--exclude=/plugbox.toml"]
HEAD = ["rsync", "-a", "--delete", "--modify-window=-1", "-ii", "--out-format=%i %l %n%L", "--stats"]


def test_rsync_upload_local_first_deploy():
    assert A.rsync_upload(["/p/app"], "/h/deploy/V/") == [
        *HEAD, *FILTERS, "--", "/p/app", "/h/deploy/V/"]


def test_rsync_upload_over_ssh_with_everything():
    assert A.rsync_upload(
        ["/p/dist/"], "h:/h/deploy/V/", link_dest="../L", shared=("media", "var/log"),
        exclude=("*.pyc", ".git"), rsh="ssh -o ControlPath=/c", dry_run=True,
    ) == [
        *HEAD, "--protect-args", "-e", "ssh -o ControlPath=/c", "--dry-run", "--link-dest=../L", *FILTERS,
        "--exclude=/media", "--exclude=/var/log", "--exclude=*.pyc", "--exclude=.git",
        "--", "/p/dist/", "h:/h/deploy/V/",
    ]


def test_rsync_upload_of_an_artifact_compares_contents():
    assert A.rsync_upload(["/tmp/plug-x/tree/"], "/h/deploy/V/", link_dest="../L", checksum=True) == [
        *HEAD, "--checksum", "--link-dest=../L", *FILTERS, "--", "/tmp/plug-x/tree/", "/h/deploy/V/"]


def test_rsync_upload_with_progress_counts_everything_up_front():
    # progress2: bytes and rate; flist2: "N files to consider", known at once without
    # incremental recursion, so that the bar has its total before the transfer starts.
    assert A.rsync_upload(["/p/app"], "/h/deploy/V/", progress=True) == [
        *HEAD, "--info=progress2,flist2", "--no-inc-recursive", *FILTERS, "--", "/p/app", "/h/deploy/V/"]


def test_protections_come_before_the_users_excludes():
    argv = A.rsync_upload(["/s"], "/d/", exclude=("*",), shared=("media",))
    order = [argv.index(a) for a in ("--filter=P /previous", "--filter=P /next", "--filter=P /.plugbox",
                                      "--exclude=/plugbox.toml",
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


def test_the_count_follows_rsyncs_progress_line_by_line():
    """What rsync prints with --info=progress2,flist2 and -ii, as the pipe carries it
    (\\r-rewritten lines split apart), and where the bar stands after each line."""
    from plugbox_client.upload import Count

    seen = []
    count = Count(progress=lambda c: seen.append((c.entries, c.total, round(c.completed(), 2), c.transferred)))
    count._shown = -1e9  # every update shown, however fast the lines come
    for line in ["building file list ... ", " 0 files...", "4 files to consider",
                 "cd+++++++++ 4096 ./", ">f+++++++++ 3000000 big", "        32,768   0%    0.00kB/s    0:00:00"]:
        count.line(line)
        count._shown = -1e9
    # The big file is being sent: it counts for the share of its bytes sent.
    count.line("     1,500,000  50%    4.89MB/s    0:00:01")
    count._shown = -1e9
    assert seen[-1] == (2, 4, 1.5, 1_500_000)
    count.line("     3,000,000 100%    4.89MB/s    0:00:01 (xfr#1, to-chk=2/4)")
    count._shown = -1e9
    count.line("hf          12 small")
    assert seen[-1] == (3, 4, 3.0, 3_000_000)
    count.done()
    assert seen[-1][:3] == (4, 4, 4.0)  # rsync ended well: every entry is in place
    assert (count.sent, count.sent_size, count.linked, count.rate) == (1, 3_000_000, 1, "4.89MB/s")
