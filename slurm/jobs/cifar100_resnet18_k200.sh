#!/bin/bash
# p-diff's seed baseline: CIFAR-100, CIFAR ResNet-18, generate layer4.1.bn1 + layer4.1.bn2 (2,048
# parameters) from K=200 checkpoints; then train the autoencoder + latent DDPM and test 200 models,
# every stage on one GPU (device=cuda: the job stops at once, naming `device`, if the node has none).
#   sbatch slurm/jobs/cifar100_resnet18_k200.sh data.root=/path/to/cifar [more overrides]
# The data must already be under data.root (torchvision's cifar-100-python folder); nothing is
# downloaded. Every stage resumes from its files, so the job is requeueable: after a preemption or
# `scontrol requeue` finished stages are skipped and the running one continues from its last save.
#SBATCH --job-name=pdiff-cifar100-r18-k200
#SBATCH --cpus-per-task=16
#SBATCH --gpus=1
#SBATCH --mem=32G
#SBATCH --time=12:00:00
#SBATCH --requeue
#SBATCH --output=slurm-%x-%j.out
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/../..}"
out="${PDIFF_OUTPUT_DIR:-outputs/cifar100_resnet18/k200_seed0}"
for stage in collect train generate evaluate; do
  srun .venv/bin/python launch/sweep.py task=cifar100_resnet18 task.param.k=200 device=cuda \
    "paths.output_dir=$out" "stage=$stage" "threads=${SLURM_CPUS_PER_TASK:-16}" "$@"
done
echo "report: $out/report.md"
