#!/usr/bin/env bash
# Single-node SLURM cluster with accounting, for tests, CI and local use (no systemd, run as root).
#
#   scripts/slurm-cluster.sh up       install what is missing, write configs, start every daemon,
#                                     return once the node is idle and sacct answers (idempotent)
#   scripts/slurm-cluster.sh down     stop every daemon this script started (state is kept)
#   scripts/slurm-cluster.sh status   one line per daemon, then sinfo
#   ... up|down|status --nodes 2      the same for a separate two-node cluster (see below)
#
# Daemons, in start order: munged (as user munge), mariadbd (own datadir, socket and port, so it never
# touches a system MariaDB), slurmdbd, `sacctmgr add cluster`, slurmctld, slurmd. Configs are written
# under /etc/slurm; state under /var/lib/dlth-slurm and /var/spool/dlth-slurm; logs under
# /var/log/dlth-slurm; pid files and sockets under /run/dlth-slurm.
#
# Environment knobs: DLTH_SLURM_CLUSTER (cluster name, default dlth), DLTH_SLURM_DB_PORT (3307),
# DLTH_SLURM_MAX_ARRAY (MaxArraySize, default 256, so that 1,000-job grids exercise array splitting).
#
# --nodes 2: a second, separate cluster 'dlth2' (DLTH_SLURM2_CLUSTER) of two nodes, dlth2-n1 and dlth2-n2,
# beside the single-node one: its own config dir /etc/slurm-dlth2 (select it with
# SLURM_CONF=/etc/slurm-dlth2/slurm.conf, or the profile key slurm_conf), slurmctld port 6827, state,
# spool, log and run dirs suffixed 'dlth-slurm2'. munged, MariaDB and slurmdbd are shared with the
# single-node cluster (started if they are not running). The two nodes are two slurmd daemons of this
# machine, each started as `slurmd -N NODE` with its own port (6828, 6829), spool dir, pid and log file,
# and its own loopback address (127.0.0.11, 127.0.0.12, written to /etc/hosts under the node's name, so
# that a job's first node name - torch's MASTER_ADDR - resolves to the first node).
set -euo pipefail

NODES=1
ACTION=${1:-}
shift || true
while (( $# )); do
    case $1 in
        --nodes) NODES=${2:-}; shift 2 || true ;;
        --nodes=*) NODES=${1#--nodes=}; shift ;;
        *) echo "usage: $0 up|down|status [--nodes 1|2]" >&2; exit 2 ;;
    esac
done
[[ $NODES == 1 || $NODES == 2 ]] || { echo "$0: --nodes must be 1 or 2, not '$NODES'" >&2; exit 2; }

CLUSTER=${DLTH_SLURM_CLUSTER:-dlth}
DB_PORT=${DLTH_SLURM_DB_PORT:-3307}
MAX_ARRAY=${DLTH_SLURM_MAX_ARRAY:-256}
DB_NAME=slurm_acct_db
DB_USER=slurm
DB_PASS=dlth-slurmdbd

ETC=/etc/slurm
RUN=/run/dlth-slurm
LIB=/var/lib/dlth-slurm
SPOOL=/var/spool/dlth-slurm
LOG=/var/log/dlth-slurm
DATADIR=$LIB/mysql
DB_RUN=$RUN/mysql        # owned by user mysql: socket + pid file
DB_LOG=$LOG/mysql        # owned by user mysql
DB_SOCK=$DB_RUN/mariadb.sock
DB_CNF=$ETC/dlth-mariadb.cnf
MUNGE_RUN=/run/munge
HOST=$(hostname -s)
PACKAGES=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server)

T0=$EPOCHREALTIME
say() { printf '[slurm-cluster %5ss] %s\n' "$(awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}')" "$*"; }
die() { printf '[slurm-cluster] ERROR: %s\n' "$*" >&2; exit 1; }

# wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND every 0.25 s until it succeeds.
wait_for() {
    local limit=$1 what=$2; shift 2
    local deadline=$(( $(date +%s) + limit ))
    until "$@" >/dev/null 2>&1; do
        if (( $(date +%s) >= deadline )); then
            die "$what did not come up within ${limit}s (logs: $LOG)"
        fi
        sleep 0.25
    done
}

pid_alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# install_if_changed DEST MODE: write stdin to DEST atomically; return 0 if the content changed.
install_if_changed() {
    local dest=$1 mode=$2 tmp
    tmp=$(mktemp "$dest.XXXXXX")
    cat >"$tmp"
    chmod "$mode" "$tmp"
    if [[ -f $dest ]] && cmp -s "$tmp" "$dest"; then
        rm -f "$tmp"
        return 1
    fi
    mv -f "$tmp" "$dest"
    return 0
}

install_packages() {
    local missing=0 bin
    for bin in slurmctld slurmd sinfo sacct slurmdbd munged mariadbd mariadb-install-db; do
        command -v "$bin" >/dev/null 2>&1 || [[ -x /usr/sbin/$bin ]] || missing=1
    done
    [[ -e /usr/lib/x86_64-linux-gnu/slurm-wlm/accounting_storage_mysql.so ]] \
        || ls /usr/lib/*/slurm-wlm/accounting_storage_mysql.so >/dev/null 2>&1 || missing=1
    if (( missing )); then
        say "installing ${PACKAGES[*]} (apt-get)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
    fi
    say "packages present: $(slurmctld -V)"
}

# node_cpus: the CPUs a test node declares: this machine's, at least 4 (SlurmdParameters=config_overrides:
# slurmd accepts more than the machine has), so that two tests can each run a 2-rank job side by side.
node_cpus() {
    local n
    n=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)  # (nproc obeys OMP_NUM_THREADS, which tests set to 1)
    echo $(( n > 4 ? n : 4 ))
}

write_configs() {
    local cpus mem_mb
    cpus=$(node_cpus)
    # RealMemory a bit below the machine's (slurmd drains a node that reports less than configured).
    mem_mb=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
    mkdir -p "$ETC" "$RUN" "$LIB" "$SPOOL/ctld" "$SPOOL/d" "$LOG"

    CHANGED_SLURM=0
    install_if_changed "$ETC/slurm.conf" 644 <<EOF && CHANGED_SLURM=1 || true
# Written by dlth-orch scripts/slurm-cluster.sh: single-node test cluster. Do not edit by hand.
ClusterName=$CLUSTER
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
StateSaveLocation=$SPOOL/ctld
SlurmdSpoolDir=$SPOOL/d
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups here: track processes by parent pid, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# Memory accounting by polling /proc; jobs over their --mem are killed (state OUT_OF_MEMORY).
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
JobAcctGatherParams=OverMemoryKill
SlurmdParameters=config_overrides
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=512
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobCompType=jobcomp/none
ReturnToService=2
# Test-friendly timings: completed jobs leave slurmctld's memory after 60 s (sacct keeps them),
# SIGTERM -> SIGKILL after 5 s, a requeued job may start again after 1 s of BeginTime delay is lifted.
MinJobAge=60
KillWait=5
InactiveLimit=0
Waittime=0
MessageTimeout=10
MaxArraySize=$MAX_ARRAY
MaxJobCount=20000
JobRequeue=1
# Preemption: jobs of partition 'urgent' requeue those of 'debug'; the user's --signal (submitit's
# USR2) is sent at once on preemption, then GraceTime seconds to checkpoint before the kill.
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
NodeName=$HOST CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE GraceTime=20
PartitionName=urgent Nodes=$HOST Default=NO MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF
EOF

    install_if_changed "$ETC/slurmdbd.conf" 600 <<EOF || true
# Written by dlth-orch scripts/slurm-cluster.sh. Do not edit by hand.
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=$DB_NAME
EOF

    install_if_changed "$DB_CNF" 644 <<EOF || true
# Written by dlth-orch scripts/slurm-cluster.sh: the MariaDB instance behind slurmdbd.
[mariadbd]
user=mysql
datadir=$DATADIR
socket=$DB_SOCK
pid-file=$DB_RUN/mariadb.pid
port=$DB_PORT
bind-address=127.0.0.1
log-error=$DB_LOG/mariadb.log
skip-log-bin
innodb_buffer_pool_size=128M
innodb_log_file_size=64M
innodb_lock_wait_timeout=900
EOF
}

start_munge() {
    [[ -s /etc/munge/munge.key ]] || mungekey --create --keyfile=/etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key && chmod 600 /etc/munge/munge.key
    mkdir -p "$MUNGE_RUN" /var/log/munge /var/lib/munge
    chown munge:munge "$MUNGE_RUN" /var/log/munge /var/lib/munge
    chmod 755 "$MUNGE_RUN"
    if ! pid_alive "$MUNGE_RUN/munged.pid"; then
        say "starting munged"
        runuser -u munge -- /usr/sbin/munged --force
    fi
    wait_for 20 munged bash -c 'munge -n | unmunge'
    say "munged ready"
}

start_mariadb() {
    mkdir -p "$DATADIR" "$DB_RUN" "$DB_LOG"
    chown mysql:mysql "$DATADIR" "$DB_RUN" "$DB_LOG"
    if [[ ! -d $DATADIR/mysql ]]; then
        say "initialising MariaDB datadir $DATADIR"
        mariadb-install-db --defaults-file="$DB_CNF" --auth-root-authentication-method=socket \
            --skip-test-db >"$LOG/mariadb-install.log" 2>&1 || die "mariadb-install-db failed: $LOG/mariadb-install.log"
    fi
    if ! pid_alive "$DB_RUN/mariadb.pid"; then
        say "starting mariadbd (port $DB_PORT)"
        setsid /usr/sbin/mariadbd --defaults-file="$DB_CNF" </dev/null >>"$LOG/mariadbd.out" 2>&1 &
    fi
    wait_for 60 mariadbd mariadb-admin --socket="$DB_SOCK" ping
    mariadb --socket="$DB_SOCK" <<EOF
CREATE DATABASE IF NOT EXISTS $DB_NAME;
CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'127.0.0.1';
GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';
EOF
    say "mariadbd ready"
}

start_slurmdbd() {
    if ! pid_alive "$RUN/slurmdbd.pid"; then
        say "starting slurmdbd"
        /usr/sbin/slurmdbd
    fi
    wait_for 60 slurmdbd sacctmgr -n list cluster
    if [[ -z $(sacctmgr -n -P list cluster "$CLUSTER" format=cluster) ]]; then
        say "registering cluster '$CLUSTER'"
        sacctmgr -i add cluster "$CLUSTER" >/dev/null
    fi
    say "slurmdbd ready"
}

start_slurmctld() {
    if pid_alive "$RUN/slurmctld.pid"; then
        if (( CHANGED_SLURM )); then
            say "slurm.conf changed: restarting slurmctld and slurmd"
            stop_daemon slurmd "$RUN/slurmd.pid"
            stop_daemon slurmctld "$RUN/slurmctld.pid"
        fi
    fi
    if ! pid_alive "$RUN/slurmctld.pid"; then
        say "starting slurmctld"
        /usr/sbin/slurmctld
    fi
    wait_for 60 slurmctld bash -c 'scontrol ping | grep -q "is UP"'
    say "slurmctld ready"
}

start_slurmd() {
    if ! pid_alive "$RUN/slurmd.pid"; then
        say "starting slurmd"
        /usr/sbin/slurmd
    fi
    wait_for 60 "node $HOST" node_idle_or_busy
    say "slurmd ready: $(sinfo -h -N -n "$HOST" -o '%N %T %c CPUs %m MB' | head -1)"
    wait_for 60 sacct sacct -n -X --starttime now-1minutes
    say "sacct answers; cluster '$CLUSTER' is up (MaxArraySize=$MAX_ARRAY)"
}

node_idle_or_busy() {
    local state
    state=$(sinfo -h -n "$HOST" -o %T 2>/dev/null | head -1)
    case $state in
        idle|mixed|allocated|completing) return 0 ;;
        down*|drain*|fail*|unknown*)
            scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
            return 1 ;;
        *) return 1 ;;
    esac
}

# stop_daemon NAME PIDFILE: SIGTERM, wait up to 20 s, then SIGKILL.
stop_daemon() {
    local name=$1 pidfile=$2 pid i
    if ! pid_alive "$pidfile"; then
        rm -f "$pidfile"
        return 0
    fi
    pid=$(cat "$pidfile")
    say "stopping $name (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for i in $(seq 80); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.25
    done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"
}

cmd_up() {
    [[ $(id -u) == 0 ]] || die "must run as root"
    install_packages
    write_configs
    start_munge
    start_mariadb
    start_slurmdbd
    start_slurmctld
    start_slurmd
}

# ---- the two-node cluster (--nodes 2) ---------------------------------------------------------------
C2=${DLTH_SLURM2_CLUSTER:-dlth2}
ETC2=/etc/slurm-$C2
RUN2=/run/dlth-slurm2
SPOOL2=/var/spool/dlth-slurm2
LOG2=/var/log/dlth-slurm2
CONF2=$ETC2/slurm.conf
CTLD2_PORT=6827
NODES2=("$C2-n1:127.0.0.11:6828" "$C2-n2:127.0.0.12:6829")  # name:address:slurmd port

s2() { SLURM_CONF=$CONF2 "$@"; }

write_configs2() {
    local cpus mem_mb entry name addr port nodelines=""
    cpus=$(node_cpus)  # each node (they share this machine's cores): a 2-node job and a 1-node 2-rank job fit side by side
    mem_mb=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)  # each node: the machine's
    mkdir -p "$ETC2" "$RUN2" "$SPOOL2/ctld" "$LOG2"
    for entry in "${NODES2[@]}"; do
        IFS=: read -r name addr port <<<"$entry"
        mkdir -p "$SPOOL2/d-$name"
        nodelines+="NodeName=$name NodeHostname=$HOST NodeAddr=$addr Port=$port CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN"$'\n'
        # the node's name resolves to its own address (torch's MASTER_ADDR is the job's first node)
        grep -qE "^$addr[[:space:]]+$name\$" /etc/hosts || printf '%s %s\n' "$addr" "$name" >>/etc/hosts
    done
    CHANGED_SLURM2=0
    # the single-node cluster's settings, with this cluster's names, ports and directories
    sed -e "s|^ClusterName=.*|ClusterName=$C2|" \
        -e "s|single-node test cluster|two-node test cluster (--nodes 2)|" \
        -e "s|^SlurmctldHost=.*|SlurmctldHost=$HOST\nSlurmctldPort=$CTLD2_PORT|" \
        -e "s|^StateSaveLocation=.*|StateSaveLocation=$SPOOL2/ctld|" \
        -e "s|^SlurmdSpoolDir=.*|SlurmdSpoolDir=$SPOOL2/d-%n|" \
        -e "s|^SlurmctldPidFile=.*|SlurmctldPidFile=$RUN2/slurmctld.pid|" \
        -e "s|^SlurmdPidFile=.*|SlurmdPidFile=$RUN2/slurmd-%n.pid|" \
        -e "s|^SlurmctldLogFile=.*|SlurmctldLogFile=$LOG2/slurmctld.log|" \
        -e "s|^SlurmdLogFile=.*|SlurmdLogFile=$LOG2/slurmd-%n.log|" \
        -e "/^NodeName=/d" -e "/^PartitionName=/d" -e "/^SlurmdParameters=/d" "$ETC/slurm.conf" >"$RUN2/slurm.conf.new"
    {
        cat "$RUN2/slurm.conf.new"
        echo "SlurmdParameters=config_overrides"
        printf '%s' "$nodelines"
        echo "PartitionName=debug Nodes=$C2-n[1-2] Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE GraceTime=20"
        echo "PartitionName=urgent Nodes=$C2-n[1-2] Default=NO MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF"
    } | install_if_changed "$CONF2" 644 && CHANGED_SLURM2=1 || true
    rm -f "$RUN2/slurm.conf.new"
}

nodes2_idle() {
    local entry name state ok=0
    for entry in "${NODES2[@]}"; do
        name=${entry%%:*}
        state=$(s2 sinfo -h -n "$name" -o %T 2>/dev/null | head -1)
        case $state in
            idle|mixed|allocated|completing) ;;
            down*|drain*|fail*|unknown*) s2 scontrol update nodename="$name" state=resume >/dev/null 2>&1 || true; ok=1 ;;
            *) ok=1 ;;
        esac
    done
    return $ok
}

cmd_up2() {
    [[ $(id -u) == 0 ]] || die "must run as root"
    install_packages
    write_configs   # the shared daemons' configs (unchanged if the single-node cluster is up)
    write_configs2
    start_munge
    start_mariadb
    start_slurmdbd
    if [[ -z $(sacctmgr -n -P list cluster "$C2" format=cluster) ]]; then
        say "registering cluster '$C2'"
        sacctmgr -i add cluster "$C2" >/dev/null
    fi
    local entry name addr port
    if (( CHANGED_SLURM2 )) && pid_alive "$RUN2/slurmctld.pid"; then
        say "$CONF2 changed: restarting $C2's slurmctld and slurmds"
        cmd_down2
    fi
    if ! pid_alive "$RUN2/slurmctld.pid"; then
        say "starting slurmctld of '$C2' (port $CTLD2_PORT)"
        s2 /usr/sbin/slurmctld
    fi
    wait_for 60 "slurmctld of $C2" bash -c "SLURM_CONF=$CONF2 scontrol ping | grep -q 'is UP'"
    for entry in "${NODES2[@]}"; do
        IFS=: read -r name addr port <<<"$entry"
        if ! pid_alive "$RUN2/slurmd-$name.pid"; then
            say "starting slurmd -N $name ($addr, port $port)"
            s2 /usr/sbin/slurmd -N "$name"
        fi
    done
    wait_for 60 "nodes of $C2" nodes2_idle
    say "slurmds ready: $(s2 sinfo -h -N -o '%N %T %c CPUs' | sort -u | tr '\n' ' ')"
    wait_for 60 "sacct of $C2" s2 sacct -n -X --starttime now-1minutes
    say "sacct answers; cluster '$C2' is up: SLURM_CONF=$CONF2"
}

cmd_down2() {
    [[ $(id -u) == 0 ]] || die "must run as root"
    local entry
    for entry in "${NODES2[@]}"; do
        stop_daemon "slurmd ${entry%%:*}" "$RUN2/slurmd-${entry%%:*}.pid"
    done
    stop_daemon "slurmctld of $C2" "$RUN2/slurmctld.pid"
    say "cluster '$C2' is down (munged, MariaDB and slurmdbd are shared: 'down' without --nodes stops them)"
}

cmd_status2() {
    local entry pair name pidfile rc=0
    for pair in "munged:$MUNGE_RUN/munged.pid" "mariadbd:$DB_RUN/mariadb.pid" "slurmdbd:$RUN/slurmdbd.pid" \
                "slurmctld:$RUN2/slurmctld.pid"; do
        name=${pair%%:*}; pidfile=${pair#*:}
        if pid_alive "$pidfile"; then printf '%-16s running (pid %s)\n' "$name" "$(cat "$pidfile")"
        else printf '%-16s stopped\n' "$name"; rc=1; fi
    done
    for entry in "${NODES2[@]}"; do
        pidfile=$RUN2/slurmd-${entry%%:*}.pid
        if pid_alive "$pidfile"; then printf '%-16s running (pid %s)\n' "slurmd ${entry%%:*}" "$(cat "$pidfile")"
        else printf '%-16s stopped\n' "slurmd ${entry%%:*}"; rc=1; fi
    done
    if (( rc == 0 )); then
        s2 sinfo
    fi
    return $rc
}

cmd_down() {
    [[ $(id -u) == 0 ]] || die "must run as root"
    stop_daemon slurmd "$RUN/slurmd.pid"
    stop_daemon slurmctld "$RUN/slurmctld.pid"
    stop_daemon slurmdbd "$RUN/slurmdbd.pid"
    stop_daemon mariadbd "$DB_RUN/mariadb.pid"
    stop_daemon munged "$MUNGE_RUN/munged.pid"
    say "cluster '$CLUSTER' is down"
}

cmd_status() {
    local name pidfile rc=0
    for pair in munged:$MUNGE_RUN/munged.pid mariadbd:$DB_RUN/mariadb.pid slurmdbd:$RUN/slurmdbd.pid \
                slurmctld:$RUN/slurmctld.pid slurmd:$RUN/slurmd.pid; do
        name=${pair%%:*}; pidfile=${pair#*:}
        if pid_alive "$pidfile"; then
            printf '%-10s running (pid %s)\n' "$name" "$(cat "$pidfile")"
        else
            printf '%-10s stopped\n' "$name"; rc=1
        fi
    done
    if (( rc == 0 )); then
        sinfo
    fi
    return $rc
}

case $ACTION:$NODES in
    up:1) cmd_up ;;
    down:1) cmd_down ;;
    status:1) cmd_status ;;
    up:2) cmd_up2 ;;
    down:2) cmd_down2 ;;
    status:2) cmd_status2 ;;
    *) echo "usage: $0 up|down|status [--nodes 1|2]" >&2; exit 2 ;;
esac
