# Sourced by the hook scripts: where gunicorn keeps its state, and the small functions they share.
# Everything lives under HOME/shared/, which outlives versions: the master started
# by one version is stopped or refreshed by the scripts of another.

home=${PLUGBOX_HOME:?"run this as a plugbox hook (PLUGBOX_HOME is not set)"}
pidfile=$home/shared/run/gunicorn.pid
logfile=$home/shared/log/gunicorn.log
# The scripts of one version call each other, never those of another version.
here=$(cd "$(dirname "$0")" && pwd)
# Asks the service over HTTP, with the python of the virtualenv (which starts faster
# than a python3 found on PATH may, through a version manager's shim).
probe() { "$home/live/env/bin/python" "$here/probe" "$@"; }

say() { printf 'wsgi-app: %s\n' "$*"; }
fail() { printf 'wsgi-app: %s\n' "$*" >&2; exit 1; }

# Whether process $1 runs. An exited process that nobody has reaped yet (a zombie)
# still answers kill -0, and a daemon's parent is init, which may be slow to reap.
alive() {
    kill -0 "$1" 2>/dev/null || return 1
    if [ -r "/proc/$1/stat" ]; then
        stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
        case ${stat##*) } in Z*|X*) return 1 ;; esac
    fi
    return 0
}

# The pid in file $1, printed, if that process runs.
running() {
    [ -f "$1" ] || return 1
    pid=$(cat "$1" 2>/dev/null) || return 1
    case $pid in ''|*[!0-9]*) return 1 ;; esac
    alive "$pid" || return 1
    echo "$pid"
}

# Wait up to $2 seconds for process $1 to end.
wait_gone() {
    n=$(($2 * 100))
    while alive "$1"; do
        [ "$n" -gt 0 ] || return 1
        n=$((n - 1))
        sleep 0.01
    done
}

# Stop master $1: TERM, then wait until it has ended (its workers first), for up to
# 30 s before KILL. A master that was told already gets nothing new from a second TERM.
stop_master() {
    kill -TERM "$1" 2>/dev/null || return 0
    if ! wait_gone "$1" 30; then
        say "master $1 still runs 30 s after TERM: killing it"
        kill -KILL "$1" 2>/dev/null || true
        wait_gone "$1" 5 || fail "master $1 does not end"
    fi
}

# The master that `bin/stop --no-wait` left ending, if any (its pid is in
# $pidfile.old): wait for it as stop_master does, then remove that file.
retire_old() {
    if oldpid=$(running "$pidfile.old"); then
        stop_master "$oldpid"
    fi
    rm -f "$pidfile.old"
}

# Show the end of gunicorn's log, where a daemon's errors go.
show_log() {
    [ -f "$logfile" ] && tail -n 15 "$logfile" | sed 's/^/  gunicorn.log: /' >&2
    return 0
}
