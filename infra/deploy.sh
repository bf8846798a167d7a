#!/usr/bin/env bash
# Deploy (or update) Berth's stage STAGE into the AWS account and region of the current AWS CLI
# credentials, as one CloudFormation stack named berth-STAGE. Safe to run again: each step is
# idempotent. docs/deploy.md explains every step.
#
#   infra/deploy.sh dev|prod
#
# Needs: the AWS CLI v2 with credentials, a region (AWS_REGION or AWS_DEFAULT_REGION), and the
# project's virtualenv (make .venv/.installed). CHALICE and PYTHON may point elsewhere.
# Optional custom domain: BERTH_DOMAIN and BERTH_CERTIFICATE_ARN (an ACM certificate in the same
# region). Once set they are kept by later runs; set them empty to remove the domain.
set -euo pipefail

STAGE="${1:-}"
case "$STAGE" in
  dev|prod) ;;
  *) echo "usage: $0 dev|prod" >&2; exit 2 ;;
esac
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CHALICE="${CHALICE:-$ROOT/.venv/bin/chalice}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
REGION="${AWS_REGION:-${AWS_DEFAULT_REGION:-}}"
if [ -z "$REGION" ]; then
  echo "$0: set AWS_REGION (or AWS_DEFAULT_REGION) to the region to deploy to" >&2
  exit 2
fi
export AWS_REGION="$REGION" AWS_DEFAULT_REGION="$REGION"
STACK="berth-$STAGE"
KEY_PARAM="/$STACK/token-key"

ACCOUNT="$(aws sts get-caller-identity --query Account --output text)"
ARTIFACTS="$STACK-artifacts-$ACCOUNT-$REGION"
echo "deploying stage $STAGE as stack $STACK to account $ACCOUNT, region $REGION"

# 1. A private bucket for the Lambda code that `aws cloudformation package` uploads.
if ! aws s3api head-bucket --bucket "$ARTIFACTS" >/dev/null 2>&1; then
  if [ "$REGION" = "us-east-1" ]; then
    aws s3api create-bucket --bucket "$ARTIFACTS" >/dev/null
  else
    aws s3api create-bucket --bucket "$ARTIFACTS" \
      --create-bucket-configuration "LocationConstraint=$REGION" >/dev/null
  fi
  aws s3api put-public-access-block --bucket "$ARTIFACTS" --public-access-block-configuration \
    "BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=true,RestrictPublicBuckets=true"
fi

# 2. The token signing key: a SecureString (encrypted with the account's aws/ssm key), created
#    once. CloudFormation cannot create SecureString parameters. The value goes through a private
#    temporary file, never the command line (where other local users could see it in `ps`).
if ! aws ssm get-parameter --name "$KEY_PARAM" --query Parameter.Name --output text >/dev/null 2>&1; then
  keyfile="$(mktemp)"
  trap 'rm -f "$keyfile"' EXIT
  chmod 600 "$keyfile"
  "$PYTHON" -c 'import secrets; print(secrets.token_hex(32), end="")' >"$keyfile"
  aws ssm put-parameter --name "$KEY_PARAM" --type SecureString --value "file://$keyfile" \
    --description "Berth $STAGE: token signing key (HS256)" >/dev/null
  rm -f "$keyfile"
fi

# 3. The Lambda package and the template (Chalice's, merged with infra/resources.yaml), then the
#    front door of chalicelib/frontdoor.py written into it (binary media types, the authorizer's
#    token pattern, the Gateway Responses carrying the Bearer challenge).
OUT="$(mktemp -d)"
(cd "$ROOT" && "$CHALICE" package --stage "$STAGE" --merge-template infra/resources.yaml "$OUT")
(cd "$ROOT" && "$PYTHON" -m berth_local.frontdoor_template "$OUT/sam.yaml")

# 4. Upload the package; the template then names it by its S3 address.
aws cloudformation package --template-file "$OUT/sam.yaml" --s3-bucket "$ARTIFACTS" \
  --s3-prefix "$STAGE" --output-template-file "$OUT/packaged.yaml"

# 5. Create or update the stack (a change set; nothing to do is not an error). Parameters not
#    given keep their current value. A stack whose first creation failed stays in
#    ROLLBACK_COMPLETE and can only be deleted: delete it (it holds nothing: the table and bucket
#    of a failed creation are deleted with it, see DeletionPolicy in infra/resources.yaml).
status="$(aws cloudformation describe-stacks --stack-name "$STACK" --query "Stacks[0].StackStatus" \
  --output text 2>/dev/null || true)"
if [ "$status" = "ROLLBACK_COMPLETE" ]; then
  echo "$STACK: its first creation failed (ROLLBACK_COMPLETE); deleting it to create it again"
  aws cloudformation delete-stack --stack-name "$STACK"
  aws cloudformation wait stack-delete-complete --stack-name "$STACK"
fi
overrides=()
if [ -n "${BERTH_DOMAIN+set}" ]; then overrides+=("DomainName=$BERTH_DOMAIN"); fi
if [ -n "${BERTH_CERTIFICATE_ARN+set}" ]; then overrides+=("CertificateArn=$BERTH_CERTIFICATE_ARN"); fi
aws cloudformation deploy --template-file "$OUT/packaged.yaml" --stack-name "$STACK" \
  --capabilities CAPABILITY_IAM --no-fail-on-empty-changeset \
  --tags "app=berth" "stage=$STAGE" \
  ${overrides[@]+--parameter-overrides "${overrides[@]}"}

# 6. Deploy the stage once more: API Gateway serves a Gateway Response (the Bearer challenge)
#    only from a deployment made after it was created or changed, and the deployment SAM makes
#    has no ordering with the GatewayResponse resources.
api_id="$(aws cloudformation describe-stacks --stack-name "$STACK" \
  --query "Stacks[0].Outputs[?OutputKey=='RestAPIId'].OutputValue" --output text)"
aws apigateway create-deployment --rest-api-id "$api_id" --stage-name v2 \
  --description "infra/deploy.sh: Gateway Responses" >/dev/null

# 7. Where the registry answers.
aws cloudformation describe-stacks --stack-name "$STACK" --query "Stacks[0].Outputs" --output table
rm -rf "$OUT"
