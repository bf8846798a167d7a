#!/usr/bin/env bash
# Delete Berth's stage STAGE and ALL ITS DATA (images, accounts) from the current AWS account and
# region: what `chalice deploy` made if the stage was deployed with infra/chalice-deploy.sh, the
# stack berth-STAGE, then what the stack keeps on purpose (the table and the blob bucket are
# DeletionPolicy: RetainExceptOnCreate), the token key and the artifacts bucket.
#
#   infra/teardown.sh dev|prod [--yes]
#
# Without --yes it asks you to type the stack name.
set -euo pipefail

STAGE="${1:-}"
case "$STAGE" in
  dev|prod) ;;
  *) echo "usage: $0 dev|prod [--yes]" >&2; exit 2 ;;
esac
REGION="${AWS_REGION:-${AWS_DEFAULT_REGION:-}}"
if [ -z "$REGION" ]; then
  echo "$0: set AWS_REGION (or AWS_DEFAULT_REGION) to the region of the deployment" >&2
  exit 2
fi
export AWS_REGION="$REGION" AWS_DEFAULT_REGION="$REGION"
STACK="berth-$STAGE"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CHALICE="${CHALICE:-$ROOT/.venv/bin/chalice}"
CHALICE_PROJECT="$ROOT/.berth/chalice-deploy/$STAGE"   # infra/chalice-deploy.sh's default
ACCOUNT="$(aws sts get-caller-identity --query Account --output text)"
BUCKET="$STACK-$ACCOUNT-$REGION"
ARTIFACTS="$STACK-artifacts-$ACCOUNT-$REGION"

if [ "${2:-}" != "--yes" ]; then
  printf 'This deletes %s and every image and account in it (account %s, %s).\nType the stack name to go on: ' \
    "$STACK" "$ACCOUNT" "$REGION"
  read -r answer
  [ "$answer" = "$STACK" ] || { echo "not deleted"; exit 1; }
fi

# A stage deployed with infra/chalice-deploy.sh: its API, functions, roles and schedule first.
if [ -f "$CHALICE_PROJECT/.chalice/deployed/$STAGE.json" ]; then
  "$CHALICE" --project-dir "$CHALICE_PROJECT" delete --stage "$STAGE"
fi

# The stack: API, functions, roles, log groups, bucket policy (table and bucket stay: Retain).
aws cloudformation delete-stack --stack-name "$STACK"
aws cloudformation wait stack-delete-complete --stack-name "$STACK"

empty_and_delete_bucket() {
  local bucket="$1"
  aws s3api head-bucket --bucket "$bucket" >/dev/null 2>&1 || return 0
  aws s3api list-multipart-uploads --bucket "$bucket" --query 'Uploads[].[Key,UploadId]' \
    --output text | while IFS=$'\t' read -r key upload_id; do
      if [ -z "$key" ] || [ "$key" = "None" ]; then continue; fi
      aws s3api abort-multipart-upload --bucket "$bucket" --key "$key" --upload-id "$upload_id"
    done
  aws s3 rb "s3://$bucket" --force >/dev/null
}

empty_and_delete_bucket "$BUCKET"
if aws dynamodb describe-table --table-name "$STACK" >/dev/null 2>&1; then
  aws dynamodb delete-table --table-name "$STACK" >/dev/null
  aws dynamodb wait table-not-exists --table-name "$STACK"
fi
aws ssm delete-parameter --name "/$STACK/token-key" >/dev/null 2>&1 || true
empty_and_delete_bucket "$ARTIFACTS"
echo "deleted $STACK"
