# Copyright: Plugbox developers
# MIT License (see LICENSE of the Plugbox repository)
"""The ssh command line Ansible would use for a host, for a program of our own (rsync).

An action plugin runs on the controller with the host's connection plugin already
configured (`self._connection`, its options set from the inventory, the play,
ansible.cfg and the environment, delegate_to included). For the `ssh` plugin this
rebuilds, from those options, the arguments its own `_build_command` gives ssh, in
the same order (ssh keeps the first value it gets for an option):

  ssh_args (ansible_ssh_args, default `-C -o ControlMaster=auto -o ControlPersist=60s`),
  StrictHostKeyChecking=no when host_key_checking is false, Port (ansible_port),
  IdentityFile (ansible_ssh_private_key_file), the non-interactive auth options,
  User (ansible_user), ConnectTimeout (timeout), ssh_common_args, ssh_extra_args,
  then ControlPath: Ansible's own socket for this host, so the command rides the
  master connection Ansible already has open (or opens the one Ansible will use).

ProxyJump or ProxyCommand come through ssh_args / ssh_common_args / ssh_extra_args
as they are. BatchMode=yes comes last, so that ssh never waits at a prompt; a
BatchMode of the user's, given earlier, wins.

ansible.posix.synchronize derives the same from task_vars (ansible_host,
ansible_port, ansible_user) and, only with use_ssh_args, the three args options;
reading the connection's options instead takes every alias and source Ansible
takes (ansible_ssh_host, ANSIBLE_REMOTE_PORT, -u, ...).
"""

from __future__ import annotations

import os
import shlex

from ansible.errors import AnsibleError

SSH_TRANSPORTS = ("ssh", "ansible.builtin.ssh")
LOCAL_TRANSPORTS = ("local", "ansible.builtin.local")


class Target:
    """Where a program of ours reaches the host: `ssh` (argv without the host) and
    `host`; for the local connection, ssh is None and paths are local."""

    def __init__(self, ssh, host, user):
        self.ssh = ssh
        self.host = host
        self.user = user

    @property
    def is_local(self):
        return self.ssh is None

    def remote_path(self, path):
        """`host:path` for rsync, an IPv6 address in brackets; the path itself when local."""
        if self.is_local:
            return path
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "%s:%s" % (host, path)


def _split(args):
    return [a.strip() for a in shlex.split(args) if a.strip()] if args else []


def target(connection, play_context):
    """The Target of the host `connection` reaches; raises AnsibleError when it cannot be had."""
    transport = connection.transport
    if transport in LOCAL_TRANSPORTS:
        return Target(None, None, None)
    if transport not in SSH_TRANSPORTS:
        raise AnsibleError("plugbox.deploy needs the ssh (or local) connection plugin to run rsync; "
                           "this host is reached with %r" % transport)
    option = connection.get_option
    if play_context.become:
        raise AnsibleError("plugbox.deploy uploads as the login user: remove become from this task "
                           "(the files would not belong to %r)" % play_context.become_user)
    if option("password") or play_context.password:
        raise AnsibleError("plugbox.deploy cannot give rsync's ssh a password: log in with a key")
    if _has_option(connection, "private_key") and option("private_key"):
        raise AnsibleError("plugbox.deploy needs the key in a file (ansible_ssh_private_key_file), "
                           "not in private_key")

    host = option("host") or play_context.remote_addr
    argv = [option("ssh_executable") or "ssh"]
    argv += _split(option("ssh_args"))
    if option("host_key_checking") is False:
        argv += ["-o", "StrictHostKeyChecking=no"]
    port = option("port")
    if port is not None:
        argv += ["-o", "Port=%s" % port]
    key = option("private_key_file")
    if key:
        argv += ["-o", 'IdentityFile="%s"' % os.path.expanduser(key)]
    argv += ["-o", "KbdInteractiveAuthentication=no",
             "-o", "PreferredAuthentications=gssapi-with-mic,gssapi-keyex,hostbased,publickey",
             "-o", "PasswordAuthentication=no"]
    user = option("remote_user")
    if user:
        argv += ["-o", 'User="%s"' % user]
    argv += ["-o", "ConnectTimeout=%s" % option("timeout")]
    argv += _split(option("ssh_common_args"))
    argv += _split(option("ssh_extra_args"))
    argv += _control_path(connection, argv, host, port, user)
    argv += ["-o", "BatchMode=yes"]
    return Target(argv, host, user)


def _has_option(connection, name):
    try:
        connection.get_option(name)
    except KeyError:
        return False
    return True


def _control_path(connection, argv, host, port, user):
    """Ansible's ControlPath for this host, when ssh_args ask for persistence and name none."""
    lowered = [a.lower() for a in argv]
    persist = any("controlpersist" in a for a in lowered)
    named = any("controlpath" in a for a in lowered)
    make = getattr(connection, "_create_control_path", None)
    if not persist or named:
        return []
    template = connection.get_option("control_path")
    if not template:
        if make is None:
            # Without Ansible's name for the socket, ssh opens a connection of its own.
            return []
        template = make(host, port, user)
    directory = os.path.abspath(os.path.expanduser(connection.get_option("control_path_dir")))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    return ["-o", 'ControlPath="%s"' % (template % dict(directory=directory))]
