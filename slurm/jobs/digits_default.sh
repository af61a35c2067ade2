#!/bin/bash
# The digits task (digits CNN, last two BatchNorm layers, K=200: data embedded), whole pipeline in one job.
#   [PDIFF_OUTPUT_DIR=DIR] sbatch slurm/jobs/digits_default.sh [hydra overrides ...]
# Requeueable: every stage resumes from its files in the output folder.
#SBATCH --job-name=pdiff-digits
#SBATCH --cpus-per-task=2
#SBATCH --mem=4G
#SBATCH --time=00:30:00
#SBATCH --requeue
#SBATCH --output=slurm-%x-%j.out
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/../..}"
srun .venv/bin/python launch/sweep.py task=digits_cnn "paths.output_dir=${PDIFF_OUTPUT_DIR:-outputs/digits_cnn/job${SLURM_JOB_ID:-local}}" \
  "threads=${SLURM_CPUS_PER_TASK:-2}" "$@"
