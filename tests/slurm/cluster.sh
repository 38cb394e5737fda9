#!/bin/bash
# A real one-node Slurm cluster on localhost, for the test suite (tests/sweep/sweep_cli.rs) and by hand.
#
#   tests/slurm/cluster.sh start  STATE_DIR   # install slurm-wlm + munge if missing, start, wait for idle
#   tests/slurm/cluster.sh status STATE_DIR   # sinfo / squeue of that cluster
#   tests/slurm/cluster.sh stop   STATE_DIR   # cancel its jobs, stop its daemons by PID
#
# Everything lives in STATE_DIR (config, spool and state directories, logs, pid files, munge socket); nothing
# is written to /etc/slurm. Client commands find the cluster with SLURM_CONF=STATE_DIR/slurm.conf. Needs root
# (the daemons run as root, munged as the munge user) and, when the packages are missing, apt-get.
# Ports 6817 (slurmctld) and 6818 (slurmd), the Slurm defaults: start refuses when either is taken.
set -euo pipefail

die() {
  echo "cluster.sh: $*" >&2
  exit 1
}

cmd=${1:-}
state=${2:-}
[ -n "$cmd" ] && [ -n "$state" ] || die "usage: cluster.sh start|status|stop STATE_DIR"
conf="$state/slurm.conf"
export SLURM_CONF="$conf"

install_packages() {
  local missing=()
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null ||
    missing+=(slurm-wlm)
  command -v munged >/dev/null || missing+=(munge)
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || die "${missing[*]} not installed, and installing needs root (running as $(id -un))"
  command -v apt-get >/dev/null || die "${missing[*]} not installed, and there is no apt-get to install them"
  echo "cluster.sh: installing ${missing[*]} with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  # Install first from the current lists; update them only if that fails (fresh container images have none).
  if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >"$state/apt.log" 2>&1; then
    apt-get update -q >>"$state/apt.log" 2>&1 || die "apt-get update failed (see $state/apt.log)"
    apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$state/apt.log" 2>&1 ||
      die "apt-get install ${missing[*]} failed (see $state/apt.log)"
  fi
}

# PID from a pid file, if that process is alive.
live_pid() {
  local f=$1 pid
  [ -s "$f" ] || return 1
  pid=$(tr -dc 0-9 <"$f")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

port_taken() {
  # /proc/net/tcp{,6}: local address column, port in hex, state 0A = LISTEN.
  local hex
  hex=$(printf '%04X' "$1")
  cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk -v p=":$hex" '$2 ~ p"$" && $4 == "0A" {f=1} END {exit !f}'
}

write_conf() {
  local host=$1 node
  # The node's real topology: a bare CPUs=N line makes slurmd refuse it. RealMemory a little below the
  # measured figure (slurmd drains a node that has less than configured).
  node=$(slurmd -C | head -n1) || die "slurmd -C failed"
  local mem topo
  mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node")
  # The topology fields as slurmd reports them (Boards/SocketsPerBoard or Sockets, cores, threads).
  topo=$(tr ' ' '\n' <<<"$node" | grep -E '^(CPUs|Boards|SocketsPerBoard|Sockets|CoresPerSocket|ThreadsPerCore)=' | tr '\n' ' ')
  [ -n "$mem" ] && grep -q CoresPerSocket= <<<"$topo" && grep -q ThreadsPerCore= <<<"$topo" ||
    die "cannot read the node's topology from slurmd -C: $node"
  cat >"$conf" <<EOF
# One-node test cluster written by tests/slurm/cluster.sh (slurmd -C: $node)
ClusterName=isoflop-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=6817
SlurmdPort=6818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$state/munge/munge.socket.2
MailProg=/bin/true
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/spool
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/slurmctld.log
SlurmdLogFile=$state/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# pgid, not linuxproc: linuxproc leaks children re-parented to PID 1 after the batch shell ends.
ProctrackType=proctrack/pgid
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
# No accounting, so finished jobs are known only while the controller keeps them: 10 minutes.
MinJobAge=600
KillWait=30
NodeName=$host NodeAddr=127.0.0.1 ${topo}RealMemory=$((mem * 9 / 10)) State=UNKNOWN
PartitionName=test Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
  local m="$state/munge" key=/etc/munge/munge.key
  id munge >/dev/null 2>&1 || die "no munge user (the munge package creates it)"
  if [ ! -s "$key" ]; then
    mungekey --create --keyfile="$key" || die "mungekey --create failed"
    chown munge:munge "$key" && chmod 0400 "$key"
  fi
  mkdir -p "$m"
  chown munge:munge "$m"
  chmod 0700 "$m"
  # The munge user must reach its socket directory.
  chmod 0755 "$state"
  runuser -u munge -- munged --force --socket="$m/munge.socket.2" --pid-file="$m/munged.pid" \
    --log-file="$m/munged.log" --seed-file="$m/munged.seed" --key-file="$key" ||
    die "munged did not start (see $m/munged.log)"
  for _ in $(seq 50); do
    [ -S "$m/munge.socket.2" ] && live_pid "$m/munged.pid" >/dev/null && return 0
    sleep 0.1
  done
  die "munged did not come up (see $m/munged.log)"
}

node_state() {
  sinfo --noheader --format=%T 2>/dev/null | head -n1
}

start() {
  [ "$(id -u)" -eq 0 ] || die "the test cluster runs its daemons as root; running as $(id -un)"
  mkdir -p "$state"
  state=$(cd "$state" && pwd)
  conf="$state/slurm.conf"
  export SLURM_CONF="$conf"
  if live_pid "$state/slurmctld.pid" >/dev/null || live_pid "$state/slurmd.pid" >/dev/null; then
    die "a cluster is already running from $state (stop it first)"
  fi
  for p in 6817 6818; do
    port_taken $p && die "port $p is already taken (another Slurm daemon on this machine?)"
  done
  install_packages
  mkdir -p "$state/ctld" "$state/spool"
  local host
  host=$(hostname -s)
  write_conf "$host"
  start_munge
  # Detached (own session, stdio closed), so the daemons outlive the process that started them; stopped
  # by their pid files.
  setsid slurmctld -D -i -f "$conf" </dev/null >>"$state/slurmctld.log" 2>&1 &
  setsid slurmd -D -N "$host" -f "$conf" </dev/null >>"$state/slurmd.log" 2>&1 &
  local s=""
  for _ in $(seq 300); do
    s=$(node_state)
    [ "$s" = idle ] && break
    sleep 0.1
  done
  if [ "$s" != idle ]; then
    echo "--- slurmctld.log" >&2
    tail -n 20 "$state/slurmctld.log" >&2 || true
    echo "--- slurmd.log" >&2
    tail -n 20 "$state/slurmd.log" >&2 || true
    stop || true
    die "the node did not become idle within 30 s (state: ${s:-no answer from slurmctld})"
  fi
  echo "cluster.sh: one-node cluster up ($host, $(sinfo --version)); export SLURM_CONF=$conf"
}

stop_pid() {
  local name=$1 f=$2 pid
  pid=$(live_pid "$f") || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  echo "cluster.sh: $name ($pid) ignored TERM for 10 s; killing it" >&2
  kill -KILL "$pid" 2>/dev/null || true
}

stop() {
  [ -d "$state" ] || return 0
  # Jobs first, while the daemons can still end them (their steps are not the daemons' children).
  if live_pid "$state/slurmctld.pid" >/dev/null && [ -f "$conf" ]; then
    scancel --quiet --full --user="$(id -un)" 2>/dev/null || true
    for _ in $(seq 400); do
      [ -z "$(squeue --noheader --states=running,completing,pending 2>/dev/null)" ] && break
      sleep 0.1
    done
  fi
  stop_pid slurmd "$state/slurmd.pid"
  stop_pid slurmctld "$state/slurmctld.pid"
  stop_pid munged "$state/munge/munged.pid"
}

case "$cmd" in
start) start ;;
stop) stop ;;
status)
  sinfo
  squeue --states=all --array
  ;;
*) die "unknown command $cmd (start|status|stop)" ;;
esac
