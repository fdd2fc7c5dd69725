#!/usr/bin/env bash
# One-time set-up of what compose.yaml expects: secrets, the intake certificate, the repository's
# CA bundle and the watched folder, owned by the containers' user (uid 10001). Run it as root
# (sudo deploy/setup.sh). It never overwrites a file: run it again safely (it only fixes
# ownership and modes then). Secrets stay in deploy/secrets (git-ignored).
set -euo pipefail
cd "$(dirname "$0")"
NODE_UID=${UPLOADER_UID:-10001}   # the USER of both images (Dockerfile)
if [ "$(id -u)" -ne 0 ] && [ "$(id -u)" -ne "$NODE_UID" ]; then
  echo "setup.sh: run it as root (sudo $0): the files must belong to uid $NODE_UID" >&2
  exit 1
fi
mkdir -p secrets tls incoming
umask 077
secret() { [ -s "secrets/$1" ] || { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "secrets/$1"; echo "created secrets/$1"; }; }
secret site_key            # the pseudonymisation key: back it up; never change it mid-trial
secret intake_token        # shared by the two nodes (forward_token is the same file)
secret review_token        # for staff using the review API
secret forward_key         # both nodes: the anonymised node refuses what it did not sign
[ -e secrets/repository_token ] || { : > secrets/repository_token; echo "created secrets/repository_token (empty: put the repository's token in it)"; }
if [ ! -s tls/intake.crt ]; then
  openssl req -x509 -newkey rsa:3072 -nodes -days 825 -subj "/CN=anonymised-node" \
    -addext "subjectAltName=DNS:anonymised-node,DNS:localhost,IP:127.0.0.1" \
    -keyout secrets/intake_tls_key -out tls/intake.crt 2>/dev/null
  cp tls/intake.crt tls/intake-ca.pem
  echo "created tls/intake.crt (self-signed; the identifiable node trusts it via tls/intake-ca.pem)"
fi
if [ ! -s tls/pages.crt ]; then
  host=$(hostname -f 2>/dev/null || hostname)
  openssl req -x509 -newkey rsa:3072 -nodes -days 825 -subj "/CN=${host}" \
    -addext "subjectAltName=DNS:${host},DNS:localhost,IP:127.0.0.1" \
    -keyout secrets/pages_tls_key -out tls/pages.crt 2>/dev/null
  echo "created tls/pages.crt (self-signed, for ${host}: the identifiable node's staff pages; replace it and secrets/pages_tls_key with your hospital's certificate)"
fi
if [ ! -s tls/repository-ca.pem ]; then
  cp /etc/ssl/certs/ca-certificates.crt tls/repository-ca.pem
  echo "created tls/repository-ca.pem (this host's CA bundle: replace it with your repository's CA)"
fi
# Compose mounts secrets and folders with the host's owner and mode: give them to the node's user.
chown "$NODE_UID:$NODE_UID" secrets/* incoming
chmod 0400 secrets/*
chmod 0700 secrets
chmod 2770 incoming        # files dropped here must be readable by uid/gid 10001 (setgid keeps the group)
chmod 0644 tls/intake.crt tls/intake-ca.pem tls/pages.crt tls/repository-ca.pem
chmod 0755 tls
