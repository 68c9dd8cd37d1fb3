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

# Wait up to $2 seconds for master $1 to end, or (with $3) to remove its pidfile $3:
# it does that last, once its workers have ended and the port is closed, and a new
# master can start from then on. Polls often: a stop + start waits on this.
wait_gone() {
    n=$(($2 * 100))
    while alive "$1"; do
        if [ -n "${3:-}" ] && [ "$(cat "$3" 2>/dev/null)" != "$1" ]; then
            return 0
        fi
        [ "$n" -gt 0 ] || return 1
        n=$((n - 1))
        sleep 0.01
    done
}

# Show the end of gunicorn's log, where a daemon's errors go.
show_log() {
    [ -f "$logfile" ] && tail -n 15 "$logfile" | sed 's/^/  gunicorn.log: /' >&2
    return 0
}
