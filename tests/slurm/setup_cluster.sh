#!/usr/bin/env bash
# A real single-node SLURM cluster for the `slurm` tests, on Debian 12 (slurm-wlm 22.05.8):
# root, no systemd, no cgroups. Installs slurmctld slurmd slurm-client munge slurmdbd
# mariadb-server through apt when missing, writes /etc/slurm/{slurm.conf,gres.conf,slurmdbd.conf},
# starts munged, MariaDB, slurmdbd (submitit polls job states with `sacct`, which needs
# accounting), slurmctld and slurmd. Idempotent: when the daemons already run with this script's
# configuration it returns in well under a second. Pid files in /run, logs in /var/log/slurm.
# Env: FAKE_GPUS (default 1; gres gpu backed by /dev/null, so GPU requests schedule for real and
# jobs compute on CPU). Stop with tests/slurm/teardown_cluster.sh. Why a setting is there: the
# comment beside it.
set -euo pipefail
T0=$(date +%s)
export DEBIAN_FRONTEND=noninteractive
[ "$(id -u)" = 0 ] || { echo "[setup] must run as root" >&2; exit 3; }
PKGS="slurmctld slurmd slurm-client munge slurmdbd mariadb-server"
missing=0; for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing=1; done
if [ $missing = 1 ]; then
  command -v apt-get >/dev/null || { echo "[setup] apt-get not available" >&2; exit 3; }
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $PKGS >/dev/null
fi
T1=$(date +%s); echo "[setup] packages: $((T1-T0))s"

HOST=$(hostname -s)
CPUS=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)   # nproc obeys OMP_NUM_THREADS
MEM_MB=$(( $(awk '/MemTotal/{print $2}' /proc/meminfo) / 1024 - 1024 ))
FAKE_GPUS=${FAKE_GPUS:-1}
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge

SLURM_CONF=$(cat <<CONF
# written by umup-repro tests/slurm/setup_cluster.sh
ClusterName=ci
SlurmctldHost=${HOST}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# requeued jobs wait cred_expire seconds before they may start again (default 120)
AuthInfo=cred_expire=10
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# without a default, each job is given the whole node's memory and jobs run one at a time
DefMemPerCPU=1024
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
MpiDefault=none
ReturnToService=2
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageTRES=gres/gpu
AccountingStorageEnforce=associations
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
MinJobAge=600
KillWait=20
MaxArraySize=10001
SlurmctldParameters=preempt_send_user_signal
GresTypes=gpu
NodeName=${HOST} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${MEM_MB} Gres=gpu:${FAKE_GPUS} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=ALL Default=NO MaxTime=INFINITE State=UP
CONF
)
GRES_CONF=$({ echo "AutoDetect=off"; for i in $(seq 1 "$FAKE_GPUS"); do echo "NodeName=${HOST} Name=gpu File=/dev/null"; done; })

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# fast path: same configuration, every daemon alive, node usable, accounting answering
if [ "$(cat /etc/slurm/slurm.conf 2>/dev/null)" = "$SLURM_CONF" ] \
   && [ "$(cat /etc/slurm/gres.conf 2>/dev/null)" = "$GRES_CONF" ] \
   && alive /run/munge/munged.pid && alive /run/mysqld/mysqld.pid && alive /run/slurmdbd.pid \
   && alive /run/slurmctld.pid && alive /run/slurmd.pid \
   && sinfo -h -N -o '%t' 2>/dev/null | grep -qE '^(idle|mix|alloc)' \
   && sacct -n -X -S now-1minutes >/dev/null 2>&1; then
  echo "[setup] cluster already running ($(( $(date +%s)-T0 ))s)"
  exit 0
fi

# (re)start from a clean state: stop what an earlier run left
for f in /run/slurmd.pid /run/slurmctld.pid /run/slurmdbd.pid; do
  if alive "$f"; then pid=$(cat "$f"); kill "$pid"; for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done; fi
done
rm -rf /var/spool/slurmctld/* /var/spool/slurmd/*
printf '%s\n' "$SLURM_CONF" > /etc/slurm/slurm.conf
printf '%s\n' "$GRES_CONF" > /etc/slurm/gres.conf

# munge (the Debian postinst creates /etc/munge/munge.key)
[ -s /etc/munge/munge.key ] || mungekey --create --force
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
chmod 0700 /etc/munge; chmod 0400 /etc/munge/munge.key; chmod 0755 /run/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  runuser -u munge -- /usr/sbin/munged          # daemonizes; pid in /run/munge/munged.pid
  for i in $(seq 1 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
fi

# MariaDB + slurmdbd
[ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
if ! mariadb -e 'select 1' >/dev/null 2>&1; then
  /usr/sbin/mariadbd --user=mysql --datadir=/var/lib/mysql --socket=/run/mysqld/mysqld.sock \
    --pid-file=/run/mysqld/mysqld.pid --bind-address=127.0.0.1 </dev/null >/var/log/slurm/mariadb.log 2>&1 &
  for i in $(seq 1 150); do mariadb -e 'select 1' >/dev/null 2>&1 && break; sleep 0.2; done
fi
# fresh accounting DB: slurmctld -c restarts job ids at 1, old rows would collide
mariadb -e "DROP DATABASE IF EXISTS slurm_acct_db; CREATE DATABASE slurm_acct_db;
  CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmpw';
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
cat > /etc/slurm/slurmdbd.conf <<CONF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=slurmpw
CONF
chmod 600 /etc/slurm/slurmdbd.conf
/usr/sbin/slurmdbd </dev/null >/dev/null 2>&1
for i in $(seq 1 150); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.2; done
sacctmgr -i add cluster ci >/dev/null 2>&1 || true
sacctmgr -i add account ci_acct Description=ci Organization=ci >/dev/null 2>&1 || true
sacctmgr -i add user root Account=ci_acct DefaultAccount=ci_acct >/dev/null 2>&1 || true
sacctmgr -i add qos ci_qos >/dev/null 2>&1 || true
sacctmgr -i modify user root set qos+=ci_qos >/dev/null 2>&1 || true

/usr/sbin/slurmctld -c </dev/null >/dev/null 2>&1   # -c: start with clean state; daemonizes
/usr/sbin/slurmd </dev/null >/dev/null 2>&1
ok=0
for i in $(seq 1 120); do
  st=$(sinfo -h -N -o '%t' 2>/dev/null | head -1 || true)
  case "$st" in idle*|mix*|alloc*) ok=1; break;; esac
  sleep 0.5
done
if [ $ok != 1 ]; then
  echo "[setup] node not ready: state='$st'" >&2; scontrol show node | grep -iE 'state|reason' >&2 || true
  tail -20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2; exit 1
fi
for i in $(seq 1 50); do sacct -n -X -S now-1minutes >/dev/null 2>&1 && break; sleep 0.2; done
sinfo -o '%P %a %D %t %G'
T2=$(date +%s); echo "[setup] daemons: $((T2-T1))s, total $((T2-T0))s"
