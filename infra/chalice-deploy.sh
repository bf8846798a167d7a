#!/usr/bin/env bash
# Deploy (or update) Berth's stage STAGE with `chalice deploy`, for a quick stage: a small
# resources stack berth-STAGE (table, bucket, log groups) and the token key first, then
# `chalice deploy` of a generated project whose configuration holds the stack's names, then the
# front door. berth_local/chalice_deploy.py does the work; docs/deploy.md explains both paths.
#
#   infra/chalice-deploy.sh dev|prod [--project-dir DIR]
#
# Needs: AWS credentials and a region (AWS_REGION or AWS_DEFAULT_REGION) as for the AWS CLI, and
# the project's virtualenv (make .venv/.installed). CHALICE and PYTHON may point elsewhere.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
cd "$ROOT"
exec "$PYTHON" -m berth_local.chalice_deploy "$@"
