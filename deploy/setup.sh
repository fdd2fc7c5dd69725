#!/usr/bin/env bash
# One-time set-up of the secrets and the intake certificate that compose.yaml expects.
# Never overwrites: run it again safely. Secrets stay in deploy/secrets (git-ignored), mode 0600.
set -euo pipefail
cd "$(dirname "$0")"
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
  chmod 644 tls/intake.crt tls/intake-ca.pem
  echo "created tls/intake.crt (self-signed; the identifiable node trusts it via tls/intake-ca.pem)"
fi
