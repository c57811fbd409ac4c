#!/usr/bin/env bash
# Make the TLS material of the local Kafka cluster's SASL_SSL listener.
#
#   scripts/make-certs.sh [DIR]      (default: var/kafka-cluster/certs)
#
# Writes, into DIR (git-ignored; refuses to overwrite an existing set):
#   ca.pem, ca.key        a local certificate authority, valid 825 days
#   broker.p12            the brokers' key and certificate (CN=localhost, SAN
#                         IP:127.0.0.1 and DNS:localhost), signed by the CA, PKCS12
#   truststore.jks        the CA for Java clients that want JKS (Spark can also read ca.pem)
#   store.password        the password of broker.p12 and truststore.jks (mode 600)
# Python and librdkafka clients read ca.pem. Uses openssl and the JDK's keytool.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${1:-$root/var/kafka-cluster/certs}"

if [ -e "$dir/broker.p12" ]; then
  echo "make-certs: $dir already holds certificates; delete the folder to make new ones." >&2
  exit 0
fi
for tool in openssl keytool; do
  command -v "$tool" >/dev/null || { echo "make-certs: $tool is not installed." >&2; exit 2; }
done
mkdir -p "$dir"
chmod 700 "$dir"
cd "$dir"
umask 077

# A random store password, never printed: it only protects files in this folder.
openssl rand -hex 16 >store.password
password=$(cat store.password)

openssl req -x509 -newkey rsa:2048 -nodes -days 825 -sha256 \
  -keyout ca.key -out ca.pem -subj "/CN=fraudstream local CA" 2>/dev/null

openssl req -newkey rsa:2048 -nodes -sha256 -keyout broker.key -out broker.csr \
  -subj "/CN=localhost" 2>/dev/null
# The SAN is what clients check the broker's name against (127.0.0.1 is how they connect).
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' \
  >broker.ext
openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 \
  -sha256 -extfile broker.ext -out broker.pem 2>/dev/null
openssl pkcs12 -export -in broker.pem -inkey broker.key -certfile ca.pem -name broker \
  -out broker.p12 -passout "pass:$password"

keytool -importcert -noprompt -alias fraudstream-ca -file ca.pem \
  -keystore truststore.jks -storetype JKS -storepass "$password" >/dev/null 2>&1

rm -f broker.csr broker.ext broker.key ca.srl
chmod 644 ca.pem truststore.jks
echo "make-certs: CA, broker keystore and client truststore written to $dir."
