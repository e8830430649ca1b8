#!/bin/sh
# Generates the SEV-SNP simulation's test PKI: an ARK and ASK (RSA-2048, signatures
# RSASSA-PSS/SHA-384/MGF1-SHA-384/salt 48, as the `sev` crate requires of AMD's) and a VCEK
# (ECDSA P-384) carrying AMD's VCEK extensions (product name, TCB SPLs, hwID = chip id).
#
# Run once; the output is committed, because RSA key generation is slow in debug builds
# and tests must not depend on it. These keys are PUBLIC TEST KEYS: the simulation's roots
# are trusted only by profiles that name them (firmware-profiles/snp-sim.toml).
#
# Turin's VCEK differs (AMD spec 57230): structVersion 1, an fmcSPL extension, and an
# 8-byte hwID (its report's CHIP_ID is those 8 bytes, then zeros).
#
#   scripts/make-snp-sim-pki.sh examples/snp-sim                # the simulation's PKI
#   scripts/make-snp-sim-pki.sh examples/snp-sim-turin turin examples/snp-sim-turin/second-chip
#                                           # a simulated Turin chip, and a second one under the same ASK
#   scripts/make-snp-sim-pki.sh tests/fixtures/snp/other-chain  # an unrelated chain for attack tests
set -eu
out=${1:?usage: $0 OUT_DIR [milan|turin] [SECOND_CHIP_DIR]}
second=${3:-}
case "$second" in ""|/*) ;; *) second="$PWD/$second" ;; esac
case "${2:-milan}" in
  milan) vcek_ext="1.3.6.1.4.1.3704.1.1 = DER:020100
1.3.6.1.4.1.3704.1.2 = ASN1:IA5STRING:Milan-B0
1.3.6.1.4.1.3704.1.3.1 = ASN1:INTEGER:3
1.3.6.1.4.1.3704.1.3.2 = ASN1:INTEGER:0
1.3.6.1.4.1.3704.1.3.3 = ASN1:INTEGER:8
1.3.6.1.4.1.3704.1.3.8 = ASN1:INTEGER:115
1.3.6.1.4.1.3704.1.4 = DER:$(openssl rand -hex 64)" ;;
  turin) vcek_ext="1.3.6.1.4.1.3704.1.1 = DER:020101
1.3.6.1.4.1.3704.1.2 = ASN1:IA5STRING:Turin-C1
1.3.6.1.4.1.3704.1.3.9 = ASN1:INTEGER:2
1.3.6.1.4.1.3704.1.3.1 = ASN1:INTEGER:4
1.3.6.1.4.1.3704.1.3.2 = ASN1:INTEGER:1
1.3.6.1.4.1.3704.1.3.3 = ASN1:INTEGER:5
1.3.6.1.4.1.3704.1.3.8 = ASN1:INTEGER:72
1.3.6.1.4.1.3704.1.4 = DER:$(openssl rand -hex 8)" ;;
  *) echo "product must be milan or turin" >&2; exit 2 ;;
esac
mkdir -p "$out"
cd "$out"
pss="-sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:48 -sigopt rsa_mgf1_md:sha384 -sha384"
days=36500
subj="/OU=Engineering/C=US/L=Santa Clara/ST=CA/O=attestor simulation"
cat > ext.cnf <<CNF
[ca]
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[vcek]
$vcek_ext
CNF
# shellcheck disable=SC2086
openssl req -x509 -newkey rsa:2048 -nodes -keyout ark.key -out ark.pem -days $days \
  -subj "$subj/CN=ARK-Sim" -extensions ca -config ext.cnf $pss 2>/dev/null || \
openssl req -x509 -newkey rsa:2048 -nodes -keyout ark.key -out ark.pem -days $days \
  -subj "$subj/CN=ARK-Sim" -addext "basicConstraints=critical,CA:true" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" $pss
openssl req -new -newkey rsa:2048 -nodes -keyout ask.key -out ask.csr -subj "$subj/CN=SEV-Sim"
# shellcheck disable=SC2086
openssl x509 -req -in ask.csr -CA ark.pem -CAkey ark.key -set_serial 1 -days $days \
  -extfile ext.cnf -extensions ca -out ask.pem $pss
openssl ecparam -name secp384r1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out vcek.key
openssl req -new -key vcek.key -out vcek.csr -subj "$subj/CN=SEV-VCEK"
# shellcheck disable=SC2086
openssl x509 -req -in vcek.csr -CA ask.pem -CAkey ask.key -set_serial 2 -days $days \
  -extfile ext.cnf -extensions vcek -outform der -out vcek.der $pss
if [ -n "$second" ]; then
  # Another chip under the same ARK and ASK (its own key and hwID).
  mkdir -p "$second"
  sed -i "s/^1.3.6.1.4.1.3704.1.4 = DER:.*/1.3.6.1.4.1.3704.1.4 = DER:$(openssl rand -hex 8)/" ext.cnf
  openssl ecparam -name secp384r1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out "$second/vcek.key"
  openssl req -new -key "$second/vcek.key" -out vcek2.csr -subj "$subj/CN=SEV-VCEK"
  # shellcheck disable=SC2086
  openssl x509 -req -in vcek2.csr -CA ask.pem -CAkey ask.key -set_serial 3 -days $days \
    -extfile ext.cnf -extensions vcek -outform der -out "$second/vcek.der" $pss
  cp ark.pem ask.pem "$second/"
  rm -f vcek2.csr
fi
rm -f ask.csr vcek.csr ext.cnf ark.srl ask.srl
# The ARK and ASK private keys are not needed by the simulation: drop them.
rm -f ark.key ask.key
