# The slurm.conf settings both local clusters share (slurm/local-cluster.sh, slurm/two-hosts.sh); sourced by both.
common_settings() {
  cat <<'SETTINGS'
AuthType=auth/munge
# Credentials expire fast so a requeued job restarts in seconds, not minutes.
AuthInfo=cred_expire=5
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without it a job that asks for no memory takes the whole node.
DefMemPerCPU=1024
# Start array tasks at once and schedule every 2 s (defaults: 3 s steps, passes every 60 s).
SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=5
# submitit ignores SIGTERM; do not wait 30 s before SIGKILL.
KillWait=10
MailProg=/bin/true
# A node that was DOWN comes back by itself once slurmd registers.
ReturnToService=2
# The node line wins over what slurmd detects (no DRAIN for "Low CPUs" and the like).
SlurmdParameters=config_overrides
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
SETTINGS
}
