#!/bin/sh
# One-shot MinIO bootstrap for deploy/docker-compose.yml; runs in the minio/mc image,
# which has a POSIX shell but no sed/grep, so only shell built-ins and `mc` are used.
# Idempotent: every `docker compose up` runs it again.
#
#   1. the bucket
#   2. its CORS rule for browser uploads (origins, PUT/POST/GET/HEAD, ExposeHeaders ETag)
#   3. a least-privilege user for the gateway (its AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)
#   4. bucket notifications (put, delete) to the webhook target that the minio service
#      declares through MINIO_NOTIFY_WEBHOOK_*_GATEWAY
set -eu
set -f # origins may hold '*': never glob

: "${MINIO_URL:=http://minio:9000}"
: "${MINIO_ROOT_USER:?MINIO_ROOT_USER is required}"
: "${MINIO_ROOT_PASSWORD:?MINIO_ROOT_PASSWORD is required}"
: "${GATEWAY_S3_BUCKET:=uploads}"
: "${S3_GATEWAY_ACCESS_KEY:?S3_GATEWAY_ACCESS_KEY is required}"
: "${S3_GATEWAY_SECRET_KEY:?S3_GATEWAY_SECRET_KEY is required}"
: "${S3_CORS_ALLOWED_ORIGINS:?S3_CORS_ALLOWED_ORIGINS is required (comma-separated origins)}"
: "${MINIO_WEBHOOK_ARN:=arn:minio:sqs::GATEWAY:webhook}"
: "${MC_ALIAS:=local}"
: "${SETUP_TMPDIR:=${TMPDIR:-/tmp}}"

BUCKET=$GATEWAY_S3_BUCKET
POLICY=gateway-uploads

log() { printf 'minio-setup: %s\n' "$*"; }
die() {
    printf 'minio-setup: error: %s\n' "$*" >&2
    exit 1
}

case $BUCKET in
'' | *[!a-z0-9.-]*) die "GATEWAY_S3_BUCKET must be a valid bucket name, got '$BUCKET'" ;;
esac

# The S3 CORS document: one rule, every configured origin.
cors_xml() {
    printf '<CORSConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">\n'
    printf '  <CORSRule>\n'
    printf '    <ID>browser-uploads</ID>\n'
    count=0
    saved_ifs=$IFS
    IFS=', '
    for origin in $1; do
        [ -n "$origin" ] || continue
        case $origin in
        *'<'* | *'>'* | *'&'* | *'"'*) die "origin has XML metacharacters: $origin" ;;
        esac
        printf '    <AllowedOrigin>%s</AllowedOrigin>\n' "$origin"
        count=$((count + 1))
    done
    IFS=$saved_ifs
    [ "$count" -gt 0 ] || die "S3_CORS_ALLOWED_ORIGINS names no origin"
    for method in PUT POST GET HEAD; do
        printf '    <AllowedMethod>%s</AllowedMethod>\n' "$method"
    done
    printf '    <AllowedHeader>*</AllowedHeader>\n'
    printf '    <ExposeHeader>ETag</ExposeHeader>\n'
    printf '    <MaxAgeSeconds>3600</MaxAgeSeconds>\n'
    printf '  </CORSRule>\n'
    printf '</CORSConfiguration>\n'
}

# What the gateway does with S3: presign PUT/POST uploads (s3:PutObject), HEAD/GET and
# delete objects, list the bucket (recalculate, readiness). Nothing else.
policy_json() {
    printf '{"Version": "2012-10-17", "Statement": [\n'
    printf '  {"Sid": "ListTheBucket", "Effect": "Allow", "Action": ["s3:ListBucket"],\n'
    printf '   "Resource": ["arn:aws:s3:::%s"]},\n' "$BUCKET"
    printf '  {"Sid": "PresignReadDeleteObjects", "Effect": "Allow",\n'
    printf '   "Action": ["s3:PutObject", "s3:GetObject", "s3:DeleteObject"],\n'
    printf '   "Resource": ["arn:aws:s3:::%s/*"]}\n' "$BUCKET"
    printf ']}\n'
}

cors_file=$SETUP_TMPDIR/gateway-cors.xml
policy_file=$SETUP_TMPDIR/gateway-policy.json
cors_xml "$S3_CORS_ALLOWED_ORIGINS" >"$cors_file"
policy_json >"$policy_file"

mc alias set "$MC_ALIAS" "$MINIO_URL" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null
log "connected to $MINIO_URL"

mc mb --ignore-existing "$MC_ALIAS/$BUCKET"

# Per-bucket CORS exists only in MinIO AIStor; the community server answers
# NotImplemented and applies the server-wide MINIO_API_CORS_ALLOW_ORIGIN instead
# (which docker-compose.yml sets to the same origins).
if mc cors set "$MC_ALIAS/$BUCKET" "$cors_file"; then
    log "bucket CORS rule set"
else
    log "no per-bucket CORS on this MinIO build; MINIO_API_CORS_ALLOW_ORIGIN applies"
fi

mc admin policy create "$MC_ALIAS" "$POLICY" "$policy_file"
mc admin user add "$MC_ALIAS" "$S3_GATEWAY_ACCESS_KEY" "$S3_GATEWAY_SECRET_KEY"
# A second attach fails with "already in effect"; that is success here.
if ! out=$(mc admin policy attach "$MC_ALIAS" "$POLICY" --user "$S3_GATEWAY_ACCESS_KEY" 2>&1); then
    case $out in
    *"already in effect"*) ;;
    *) die "policy attach failed: $out" ;;
    esac
fi
log "user $S3_GATEWAY_ACCESS_KEY has policy $POLICY"

mc event add --event put,delete --ignore-existing "$MC_ALIAS/$BUCKET" "$MINIO_WEBHOOK_ARN"
log "notifications for $BUCKET go to $MINIO_WEBHOOK_ARN"
log "done"
