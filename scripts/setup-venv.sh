#!/usr/bin/env bash
# The project's Python environment, made by `make setup` (so by `make run` and `make test`): .venv with torch and
# torchvision pinned to the releases on this machine's disk (pip's cap stays), then `pip install -e '.[dev]'`.
#   bash scripts/setup-venv.sh [PYTHON]      (PYTHON: the interpreter that makes the venv; default python3)
# pip's output goes to .venv/setup.log; any failure is one line naming what failed and that log.
set -eEuo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python3}
VENV=${VENV:-.venv}
LOG=$VENV/setup.log

say() { printf '[setup] %s\n' "$*"; }
die() { say "ERROR: $*" >&2; exit 1; }
trap 'die "\`$BASH_COMMAND\` failed (exit $?, line $LINENO); log: $PWD/$LOG"' ERR

command -v "$PY" >/dev/null || die "$PY not found: install Python 3.10 or newer, or run make PYTHON=/path/to/python3"
if [[ ! -x $VENV/bin/python ]]; then
  "$PY" -m venv "$VENV" || die "\`$PY -m venv $VENV\` failed: Debian needs the python3-venv package"
fi
# A checkout on a file system mounted noexec (a hardened /tmp) cannot run the venv's programs (ruff, pip's
# scripts): say so in one line, before anything is installed.
printf '#!/bin/sh\n' >"$VENV/exec-probe" && chmod +x "$VENV/exec-probe"
"$VENV/exec-probe" 2>/dev/null || die "programs in $PWD/$VENV cannot run: $(df --output=target . | tail -1) is" \
  "mounted noexec; clone pdiff into a folder on a file system that allows programs (e.g. under \$HOME)"
rm -f "$VENV/exec-probe"
say "installing torch, torchvision and pdiff's packages into $VENV (first run: a few minutes; log: $LOG)"
{
  "$VENV/bin/python" -m pip install torch==2.14.1 torchvision==0.29.1 &&
    "$VENV/bin/python" -m pip install -e '.[dev]'
} >"$LOG" 2>&1 || die "pip could not install pdiff's packages (last lines of $PWD/$LOG: $(tail -n 2 "$LOG" | tr '\n' ' '))"
touch "$VENV/.installed"
say "ready: $VENV ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
