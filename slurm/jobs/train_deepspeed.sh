#!/bin/bash
# Train the generator (autoencoder + latent DDPM) with DeepSpeed, one rank per SLURM task, on a zoo already
# collected into the output folder (e.g. by `stage=collect`):
#   PDIFF_OUTPUT_DIR=DIR sbatch --ntasks=4 slurm/jobs/train_deepspeed.sh [trainer.zero_stage=3 ...]
# Rank, world size and the rendezvous (first node of the allocation) come from SLURM's variables.
# Requeueable: training resumes from its last DeepSpeed checkpoint (same number of tasks).
#SBATCH --job-name=pdiff-train
#SBATCH --ntasks=2
#SBATCH --cpus-per-task=1
#SBATCH --mem=4G
#SBATCH --time=01:00:00
#SBATCH --requeue
#SBATCH --output=slurm-%x-%j.out
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/../..}"
: "${PDIFF_OUTPUT_DIR:?set PDIFF_OUTPUT_DIR to the run folder that holds zoo/}"
srun --kill-on-bad-exit=1 .venv/bin/python launch/sweep.py stage=train trainer=deepspeed \
  "paths.output_dir=${PDIFF_OUTPUT_DIR}" "threads=${SLURM_CPUS_PER_TASK:-1}" "$@"
