#!/usr/bin/env bash
# local_cluster.sh - a real single-host Slurm cluster (munged + slurmctld + slurmd) plus Open MPI, from
# Debian 12 (bookworm) packages, without systemd: what tests/slurm/slurm_e2e.sh runs the sbatch scripts
# on, and a way to try slurm/*.sbatch on a workstation. Needs root (it starts the daemons).
#
# Tested on Debian 12 with Slurm 22.05.8, munge 0.5.15, Open MPI 4.1.4, PMIx 4.2.2 on 2 cores, with
# proctrack/linuxproc + task/none (no cgroups needed), one node or several emulated on one host.
#
# Usage:
#   local_cluster.sh install         only install the missing packages (root)
#   local_cluster.sh [start] [DIR]   install missing packages, write configs into
#                                    DIR, start the daemons, wait until all nodes
#                                    are idle. Idempotent: if this DIR's daemons
#                                    already run, it only waits/reports.
#   local_cluster.sh stop [DIR]      scancel all jobs, then stop only the daemons
#                                    whose PIDs are in DIR's pid files.
#   local_cluster.sh restart [DIR]
#   local_cluster.sh status [DIR]
#   local_cluster.sh env [DIR]       print the lines to eval (SLURM_CONF ...)
#   local_cluster.sh selftest [DIR]  compile launch_check.cpp (an MPI all-reduce)
#                                    and run it via sbatch (srun --mpi=pmix, mpirun)
# DIR defaults to $SLURM_LOCAL_DIR or /tmp/slurm-local.
#
# After start:  . DIR/env.sh   (or: eval "$(local_cluster.sh env DIR)")
#               sbatch job.sbatch; srun -n 4 ./a.out
#
# Knobs (environment variables, read at start):
#   SLURM_LOCAL_CPUS=4          CPUs advertised per node (may exceed real cores;
#                               SlurmdParameters=config_overrides)
#   SLURM_LOCAL_GPUS=4          fake GPUs per node as GRES gpu (File= symlinks
#                               to /dev/null); sets CUDA_VISIBLE_DEVICES. 0 = off
#   SLURM_LOCAL_NODES=1         >1 emulates N nodes with N slurmd on this host
#                               (NodeName=node[1-N]); MPI then needs
#                               OMPI_MCA_btl=self,tcp (set via TaskProlog)
#   SLURM_LOCAL_MEM_MB=16000    RealMemory per node (memory is not enforced)
#   SLURM_LOCAL_FEATURES=""     node Features (for --constraint), e.g. "a100,ib"
#   SLURM_LOCAL_PARTITIONS=debug  space-separated; first one is the default
#   SLURM_LOCAL_CTLD_PORT=6817  SLURM_LOCAL_SLURMD_PORT=6818 (nodes use +0..N-1)
#   SLURM_LOCAL_CRED_EXPIRE=10  AuthInfo cred_expire (min 5); a requeued job
#                               waits about this long before it may restart
#                               (Slurm default 120)
#   SLURM_LOCAL_EXTRA_CONF=""   extra lines appended to slurm.conf
#   SLURM_LOCAL_KEEP_STATE=0    1 = keep slurmctld state across restarts; with
#                               'restart' running jobs are not cancelled either
#   SLURM_LOCAL_LINK_ETC=0      1 = symlink /etc/slurm/slurm.conf to DIR's conf
#                               so plain sbatch works without SLURM_CONF
#   SLURM_LOCAL_SKIP_APT=0      1 = never run apt-get
#   SLURM_LOCAL_TIMEOUT=60      seconds to wait for the nodes to become idle
set -euo pipefail

CMD=start
case "${1:-}" in
  install|start|stop|restart|status|env|selftest) CMD=$1; shift ;;
  -h|--help|help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
esac
DIR=${1:-${SLURM_LOCAL_DIR:-/tmp/slurm-local}}
DIR=$(realpath -m -- "$DIR")

CPUS=${SLURM_LOCAL_CPUS:-4}
GPUS=${SLURM_LOCAL_GPUS:-4}
NODES=${SLURM_LOCAL_NODES:-1}
MEM=${SLURM_LOCAL_MEM_MB:-16000}
FEATURES=${SLURM_LOCAL_FEATURES:-}
PARTITIONS=${SLURM_LOCAL_PARTITIONS:-debug}
CTLD_PORT=${SLURM_LOCAL_CTLD_PORT:-6817}
SLURMD_PORT=${SLURM_LOCAL_SLURMD_PORT:-6818}
CRED_EXPIRE=${SLURM_LOCAL_CRED_EXPIRE:-10}
EXTRA_CONF=${SLURM_LOCAL_EXTRA_CONF:-}
KEEP_STATE=${SLURM_LOCAL_KEEP_STATE:-0}
LINK_ETC=${SLURM_LOCAL_LINK_ETC:-0}
SKIP_APT=${SLURM_LOCAL_SKIP_APT:-0}
TIMEOUT=${SLURM_LOCAL_TIMEOUT:-60}

# Minimal package set (no recommends): slurm-wlm is only a metapackage that
# additionally pulls ~30 optional plugin packages.
PKGS=(slurmctld slurmd slurm-client munge openmpi-bin libopenmpi-dev libpmix-dev)

CONF=$DIR/etc/slurm.conf
MUNGE_DIR=$DIR/munge
MUNGE_SOCK=$MUNGE_DIR/munge.socket
MUNGE_PID=$MUNGE_DIR/munged.pid
CTLD_PID=$DIR/run/slurmctld.pid
HOST=$(hostname -s 2>/dev/null || uname -n)
HOST=${HOST%%.*}

log() { printf '[local_cluster %(%T)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

node_names() {
  if [ "$NODES" -le 1 ]; then echo "$HOST"; else seq -f 'node%g' 1 "$NODES"; fi
}
node_conf() {   # config file a given node's slurmd reads
  if [ "$NODES" -le 1 ]; then echo "$CONF"; else echo "$DIR/etc/$1/slurm.conf"; fi
}
slurmd_pidfile() { echo "$DIR/run/slurmd-$1.pid"; }

# pid_of FILE EXE: print the pid from FILE if that process is alive and runs EXE
pid_of() {
  local f=$1 exe=$2 p
  [ -s "$f" ] || return 1
  p=$(tr -dc '0-9' < "$f")
  [ -n "$p" ] && [ -d "/proc/$p" ] || return 1
  [ "$(readlink -f "/proc/$p/exe" 2>/dev/null)" = "$(readlink -f "$exe")" ] || return 1
  echo "$p"
}

stop_pidfile() {  # stop_pidfile FILE EXE NAME : TERM, wait 10 s, then KILL
  local f=$1 exe=$2 name=$3 p i
  if p=$(pid_of "$f" "$exe"); then
    log "stopping $name (pid $p)"
    kill -TERM "$p" 2>/dev/null || true
    # gone, or a zombie (no exe link) waiting to be reaped by PID 1
    for i in $(seq 1 50); do readlink "/proc/$p/exe" >/dev/null 2>&1 || break; sleep 0.2; done
    if readlink "/proc/$p/exe" >/dev/null 2>&1; then log "$name pid $p still alive, SIGKILL"; kill -KILL "$p" 2>/dev/null || true; fi
  fi
  rm -f "$f"
}

install_packages() {
  [ "$SKIP_APT" = 1 ] && return 0
  local missing=() p t0
  for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && { log "packages already installed"; return 0; }
  [ "$(id -u)" -eq 0 ] || die "packages missing (${missing[*]}) and not root"
  t0=$(now_ms)
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # keep the packages' init scripts from starting daemons (no systemd here)
  local added_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; added_policy=1
  fi
  local rc=0
  apt-get update -qq -o DPkg::Lock::Timeout=600 || rc=$?
  [ $rc = 0 ] && { apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=600 "${missing[@]}" >/dev/null || rc=$?; }
  if [ $added_policy = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
  [ $rc = 0 ] || die "apt-get failed (rc=$rc)"
  log "install took $(( $(now_ms) - t0 )) ms"
}

gen_slurm_conf() {   # gen_slurm_conf TMPFS_DIR (node-local pmix temp base)
  local tmpfs=$1 first=1 p d gres="" nodespec
  if [ "$GPUS" -gt 0 ]; then gres=" Gres=gpu:$GPUS"; fi
  if [ -n "$FEATURES" ]; then gres="$gres Features=$FEATURES"; fi
  if [ "$NODES" -le 1 ]; then
    nodespec="NodeName=$HOST NodeAddr=127.0.0.1 Port=$SLURMD_PORT"
  else
    nodespec="NodeName=node[1-$NODES] NodeHostname=$HOST NodeAddr=127.0.0.1 Port=[$SLURMD_PORT-$((SLURMD_PORT + NODES - 1))]"
  fi
  cat <<EOF
# generated by local_cluster.sh - single-host test cluster, not for production
ClusterName=local
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$CTLD_PORT
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCK,cred_expire=$CRED_EXPIRE
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$DIR/run/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
TmpFS=$tmpfs
# no cgroups: works in containers/VMs without cgroup delegation
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.log
MailProg=/bin/true
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# Debian's Open MPI only has PMIx (no PMI-2): make plain 'srun' use it
MpiDefault=pmix
ReturnToService=2
# advertise CPUs/memory from this file, not from the hardware
SlurmdParameters=config_overrides
DependencyParameters=kill_invalid_depend
EOF
  [ "$GPUS" -gt 0 ] && echo "GresTypes=gpu"
  if [ "$NODES" -gt 1 ]; then
    echo "DebugFlags=NO_CONF_HASH"
    echo "TaskProlog=$DIR/etc/task_prolog.sh"
  fi
  echo "$nodespec CPUs=$CPUS Sockets=1 CoresPerSocket=$CPUS ThreadsPerCore=1 RealMemory=$MEM$gres State=UNKNOWN"
  for p in $PARTITIONS; do
    if [ $first = 1 ]; then d=YES; first=0; else d=NO; fi
    echo "PartitionName=$p Nodes=ALL Default=$d MaxTime=INFINITE State=UP"
  done
  [ -n "$EXTRA_CONF" ] && printf '%s\n' "$EXTRA_CONF"
  return 0
}

gen_gres_conf() {
  [ "$GPUS" -gt 0 ] || return 0
  local files
  if [ "$GPUS" -eq 1 ]; then files=$DIR/fakegpu/nvidia0; else files="$DIR/fakegpu/nvidia[0-$((GPUS - 1))]"; fi
  echo "Name=gpu File=$files"
}

gen_cgroup_conf() {
  # slurmd 22.05 always loads a cgroup plugin, even with proctrack/linuxproc +
  # task/none. The default (autodetect) makes slurmd die when /sys/fs/cgroup is
  # not mounted ("cgroup filesystem not mounted in /sys/fs/cgroup/") or looks
  # hybrid ("Hybrid mode is not supported"). cgroup/v1 loads without touching
  # any cgroup mount as long as no cgroup-based plugin is configured.
  echo "CgroupPlugin=cgroup/v1"
}

write_configs() {
  local n i
  mkdir -p "$DIR"/{etc,state,spool,log,run,tmp,fakegpu}
  chmod 755 "$DIR"
  for n in $(node_names); do mkdir -p "$DIR/spool/$n" "$DIR/tmp/$n"; done
  if [ "$KEEP_STATE" != 1 ]; then rm -rf "${DIR:?}/state"/*; fi
  for i in $(seq 0 $((GPUS - 1))); do ln -sfn /dev/null "$DIR/fakegpu/nvidia$i"; done
  if [ "$NODES" -le 1 ]; then
    gen_slurm_conf "$DIR/tmp/$HOST" > "$CONF"
    gen_gres_conf > "$DIR/etc/gres.conf"
    gen_cgroup_conf > "$DIR/etc/cgroup.conf"
  else
    gen_slurm_conf "$DIR/tmp" > "$CONF"
    gen_gres_conf > "$DIR/etc/gres.conf"
    gen_cgroup_conf > "$DIR/etc/cgroup.conf"
    # one slurmd per emulated node; each needs its own PMIx temp dir (TmpFS),
    # otherwise the stepds collide on TmpFS/spmix_appdir_<uid>_<job>.<step>
    for n in $(node_names); do
      mkdir -p "$DIR/etc/$n"
      { gen_slurm_conf "$DIR/tmp/$n"; } > "$DIR/etc/$n/slurm.conf"
      cp "$DIR/etc/gres.conf" "$DIR/etc/$n/gres.conf"
      gen_cgroup_conf > "$DIR/etc/$n/cgroup.conf"
    done
    # Open MPI's shared-memory BTL (vader) crashes when two "nodes" share a host
    cat > "$DIR/etc/task_prolog.sh" <<'EOF'
#!/bin/sh
echo "export OMPI_MCA_btl=self,tcp"
EOF
    chmod 755 "$DIR/etc/task_prolog.sh"
  fi
  {
    echo "export SLURM_CONF=$CONF"
    [ "$NODES" -gt 1 ] && echo "export OMPI_MCA_btl=self,tcp"
    echo "# mpirun refuses to run as root without these:"
    echo "export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1"
  } > "$DIR/env.sh"
}

start_munge() {
  if pid_of "$MUNGE_PID" /usr/sbin/munged >/dev/null; then log "munged already running"; return 0; fi
  mkdir -p "$MUNGE_DIR"
  chown munge:munge "$MUNGE_DIR"; chmod 0755 "$MUNGE_DIR"   # socket dir must be o+x
  if [ ! -s "$MUNGE_DIR/munge.key" ]; then
    mungekey -c -k "$MUNGE_DIR/munge.key" 2>/dev/null || dd if=/dev/urandom of="$MUNGE_DIR/munge.key" bs=1 count=1024 status=none
  fi
  chown munge:munge "$MUNGE_DIR/munge.key"; chmod 0400 "$MUNGE_DIR/munge.key"
  rm -f "$MUNGE_SOCK" "$MUNGE_SOCK.lock"
  runuser -u munge -- /usr/sbin/munged --socket="$MUNGE_SOCK" --key-file="$MUNGE_DIR/munge.key" \
      --pid-file="$MUNGE_PID" --log-file="$MUNGE_DIR/munged.log" --seed-file="$MUNGE_DIR/munged.seed" \
    || { tail -n 5 "$MUNGE_DIR/munged.log" >&2; die "munged failed to start"; }
  local i
  for i in $(seq 1 50); do
    munge -n -S "$MUNGE_SOCK" 2>/dev/null | unmunge -S "$MUNGE_SOCK" >/dev/null 2>&1 && { log "munged up (pid $(cat "$MUNGE_PID"))"; return 0; }
    sleep 0.1
  done
  die "munge/unmunge round trip failed; see $MUNGE_DIR/munged.log"
}

wait_pidfile() { local i; for i in $(seq 1 50); do [ -s "$1" ] && return 0; sleep 0.1; done; return 0; }

start_slurm() {
  export SLURM_CONF=$CONF
  if pid_of "$CTLD_PID" /usr/sbin/slurmctld >/dev/null; then
    log "slurmctld already running"
  else
    local cflag=-c; [ "$KEEP_STATE" = 1 ] && cflag=""
    /usr/sbin/slurmctld $cflag -f "$CONF" || die "slurmctld failed; see $DIR/log/slurmctld.log"
    wait_pidfile "$CTLD_PID"
    log "slurmctld started (pid $(cat "$CTLD_PID" 2>/dev/null || echo ?))"
  fi
  local n c
  for n in $(node_names); do
    if pid_of "$(slurmd_pidfile "$n")" /usr/sbin/slurmd >/dev/null; then log "slurmd $n already running"; continue; fi
    c=$(node_conf "$n")
    if [ "$NODES" -le 1 ]; then
      SLURM_CONF=$c /usr/sbin/slurmd -f "$c" || die "slurmd failed; see $DIR/log/slurmd-$n.log"
    else
      SLURM_CONF=$c /usr/sbin/slurmd -f "$c" -N "$n" || die "slurmd $n failed; see $DIR/log/slurmd-$n.log"
    fi
    wait_pidfile "$(slurmd_pidfile "$n")"
    log "slurmd $n started (pid $(cat "$(slurmd_pidfile "$n")" 2>/dev/null || echo ?))"
  done
}

port_in_use() {  # port_in_use PORT : true if something LISTENs on it (tcp/tcp6)
  local hex; hex=$(printf ':%04X' "$1")
  cat /proc/net/tcp /proc/net/tcp6 2>/dev/null |
    awk -v h="$hex" '$4 == "0A" && substr($2, length($2) - 4) == h {f = 1} END {exit !f}'
}

check_ports() {
  local p
  for p in "$CTLD_PORT" $(seq "$SLURMD_PORT" $((SLURMD_PORT + NODES - 1))); do
    port_in_use "$p" && die "TCP port $p is already in use (another slurmctld/slurmd?). Stop it or set SLURM_LOCAL_CTLD_PORT / SLURM_LOCAL_SLURMD_PORT."
  done
  return 0
}

daemons_alive() {  # fail fast if a daemon we started has died
  local n
  pid_of "$CTLD_PID" /usr/sbin/slurmctld >/dev/null || { tail -n 5 "$DIR/log/slurmctld.log" >&2; die "slurmctld died; see $DIR/log/slurmctld.log"; }
  for n in $(node_names); do
    pid_of "$(slurmd_pidfile "$n")" /usr/sbin/slurmd >/dev/null || { tail -n 5 "$DIR/log/slurmd-$n.log" >&2; die "slurmd $n died; see $DIR/log/slurmd-$n.log"; }
  done
}

wait_idle() {
  local t0 end states
  t0=$(date +%s); end=$(( t0 + TIMEOUT ))
  export SLURM_CONF=$CONF
  while :; do
    # daemons fork before writing pid files: check liveness after a grace period
    [ $(( $(date +%s) - t0 )) -ge 2 ] && daemons_alive
    states=$(sinfo -h -N -o '%N %T' 2>/dev/null | sort -u || true)
    if [ -n "$states" ] && ! grep -qvE ' (idle|mixed|allocated)$' <<<"$states"; then
      log "nodes ready: $(tr '\n' ' ' <<<"$states")"; return 0
    fi
    if [ "$(date +%s)" -ge "$end" ]; then
      log "nodes not idle after ${TIMEOUT}s: $states"
      sinfo -N -o '%N %T %E' >&2 || true
      tail -n 20 "$DIR/log/slurmctld.log" >&2 || true
      die "cluster did not become ready"
    fi
    sleep 0.25
  done
}

link_etc() {
  [ "$LINK_ETC" = 1 ] || return 0
  if [ -e /etc/slurm/slurm.conf ] && [ "$(readlink -f /etc/slurm/slurm.conf)" != "$CONF" ]; then
    log "not touching existing /etc/slurm/slurm.conf"; return 0
  fi
  mkdir -p /etc/slurm; ln -sfn "$CONF" /etc/slurm/slurm.conf; log "linked /etc/slurm/slurm.conf -> $CONF"
}

do_start() {
  [ "$(id -u)" -eq 0 ] || die "must run as root"
  local t0; t0=$(now_ms)
  install_packages
  local running=1 n
  pid_of "$CTLD_PID" /usr/sbin/slurmctld >/dev/null || running=0
  for n in $(node_names); do pid_of "$(slurmd_pidfile "$n")" /usr/sbin/slurmd >/dev/null || running=0; done
  pid_of "$MUNGE_PID" /usr/sbin/munged >/dev/null || running=0
  if [ $running = 1 ]; then
    log "cluster in $DIR already running; configs left as they are"
  else
    # partial leftovers: stop what is ours and start clean
    do_stop quiet
    check_ports
    write_configs
    start_munge
    start_slurm
  fi
  wait_idle
  link_etc
  log "ready in $(( $(now_ms) - t0 )) ms.  Use:  . $DIR/env.sh"
}

do_stop() {
  local n
  export SLURM_CONF=$CONF
  # restart with SLURM_LOCAL_KEEP_STATE=1 leaves jobs alone (their slurmstepds
  # keep running and slurmctld recovers them from StateSaveLocation)
  if [ "${1:-}" != keepjobs ] && pid_of "$CTLD_PID" /usr/sbin/slurmctld >/dev/null; then
    local jobs i
    jobs=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ' || true)
    if [ -n "${jobs// /}" ]; then
      log "cancelling jobs: $jobs"
      # shellcheck disable=SC2086
      scancel $jobs 2>/dev/null || true
      for i in $(seq 1 150); do [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break; sleep 0.2; done
    fi
  fi
  for n in $(ls "$DIR/run" 2>/dev/null | sed -n 's/^slurmd-\(.*\)\.pid$/\1/p'); do
    stop_pidfile "$(slurmd_pidfile "$n")" /usr/sbin/slurmd "slurmd $n"
  done
  stop_pidfile "$CTLD_PID" /usr/sbin/slurmctld slurmctld
  stop_pidfile "$MUNGE_PID" /usr/sbin/munged munged
  if [ -L /etc/slurm/slurm.conf ] && [ "$(readlink /etc/slurm/slurm.conf)" = "$CONF" ]; then rm -f /etc/slurm/slurm.conf; fi
  [ "${1:-}" = quiet ] || log "stopped (logs kept in $DIR/log)"
  return 0
}

do_status() {
  local f n p rc=0
  if p=$(pid_of "$MUNGE_PID" /usr/sbin/munged); then echo "munged     pid $p"; else echo "munged     not running"; rc=1; fi
  if p=$(pid_of "$CTLD_PID" /usr/sbin/slurmctld); then echo "slurmctld  pid $p"; else echo "slurmctld  not running"; rc=1; fi
  for f in "$DIR"/run/slurmd-*.pid; do
    [ -e "$f" ] || { echo "slurmd     not running"; rc=1; continue; }
    n=${f##*/slurmd-}; n=${n%.pid}
    if p=$(pid_of "$f" /usr/sbin/slurmd); then echo "slurmd $n pid $p"; else echo "slurmd $n not running"; rc=1; fi
  done
  if [ $rc = 0 ]; then SLURM_CONF=$CONF sinfo -N -o '%N %P %T %c %G %m'; SLURM_CONF=$CONF squeue; fi
  return $rc
}

do_selftest() {
  . "$DIR/env.sh"
  local d=$DIR/selftest j t0
  mkdir -p "$d"
  mpicxx -O1 -o "$d/hello_mpi" "$(dirname "$(realpath "$0")")/launch_check.cpp"
  local ntasks=$CPUS nodeopt="-N 1"
  [ "$NODES" -gt 1 ] && { nodeopt="-N $NODES"; ntasks=$NODES; }
  cat > "$d/selftest.sbatch" <<EOF
#!/bin/bash
#SBATCH -J selftest
#SBATCH $nodeopt
#SBATCH -n $ntasks
#SBATCH -t 00:02:00
#SBATCH -o $d/selftest-%j.out
set -e
srun --mpi=pmix $d/hello_mpi
mpirun $d/hello_mpi
EOF
  t0=$(now_ms)
  j=$(sbatch --parsable "$d/selftest.sbatch")
  while [ -n "$(squeue -h -j "$j" 2>/dev/null)" ]; do sleep 0.2; done
  cat "$d/selftest-$j.out"
  local st; st=$(scontrol show job "$j" | grep -o 'JobState=[A-Z]*')
  log "selftest job $j: $st in $(( $(now_ms) - t0 )) ms"
  [ "$st" = JobState=COMPLETED ]
}

case $CMD in
  install) [ "$(id -u)" -eq 0 ] || die "must run as root"; install_packages ;;
  start) do_start ;;
  stop) do_stop ;;
  restart) if [ "$KEEP_STATE" = 1 ]; then do_stop keepjobs; else do_stop; fi; do_start ;;
  status) do_status ;;
  env) [ -f "$DIR/env.sh" ] && cat "$DIR/env.sh" || die "no $DIR/env.sh; start first" ;;
  selftest) do_selftest ;;
esac
