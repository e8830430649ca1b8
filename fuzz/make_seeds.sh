#!/usr/bin/env bash
# Rebuilds the seed corpora in fuzz/seeds/ and the real bundle in fuzz/fixtures/bundle/
# from real outputs: the test fixtures (swtpm / tpm2-tools output, RFC and upstream
# vectors) and a fresh bundle made by `attestor attest` on a swtpm with a CA of its own.
#   fuzz/make_seeds.sh
# Needs swtpm, swtpm_setup, python3 and a built attestor (cargo build).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/swtpm.sh
root="$PWD"
work="$(mktemp -d)"
trap 'attestor_swtpm_stop "$work"; rm -rf "$work"' EXIT

# --- a real bundle: swtpm with a CA of its own, then attestor attest (online + offline)
attestor_swtpm_start "$work"
cp -r examples "$work/examples"
sed -i "s|^state_dir = .*|state_dir = \"$work/state\"|" "$work/examples/agent.toml"
bin="$root/target/debug/attestor"
tcti="$SWTPM_TCTI"
fix=fuzz/fixtures/bundle
mkdir -p "$fix"
# The bundle target pins this AK by its TPM Name (what `attestor init` prints).
"$bin" init --config "$work/examples/agent.toml" --tcti "$tcti" |
    sed -n 's/^AK name \([0-9a-f]*\).*/\1/p' >"$fix/ak-name"
"$bin" attest --config "$work/examples/agent.toml" --tcti "$tcti" \
    --nonce 00112233445566778899aabbccddeeff --out "$work/online.json"
"$bin" attest --config "$work/examples/agent.toml" --tcti "$tcti" --out "$work/offline.json"
cp "$work/ca/swtpm-localca-rootca-cert.pem" "$fix/root.pem"
cp "$work/ca/issuercert.pem" "$fix/issuer.pem"
sed -e 's|/var/lib/swtpm-localca/swtpm-localca-rootca-cert.pem|root.pem|' \
    -e 's|/var/lib/swtpm-localca/issuercert.pem|issuer.pem|' \
    firmware-profiles/swtpm.toml >"$fix/profile.toml"
date +%s >"$fix/now"
"$bin" verify "$work/online.json" --profile "$fix/profile.toml" \
    --nonce 00112233445566778899aabbccddeeff --ak-name "$(cat "$fix/ak-name")"
# A drift report: the configuration changes, the sealed key refuses, attest writes the
# report and exits 1.
echo "workers = 64" >"$work/examples/policy-kernel/kernel.toml"
"$bin" attest --config "$work/examples/agent.toml" --tcti "$tcti" \
    --nonce 00112233445566778899aabbccddeeff --out "$work/drift.json" || true
grep -q drift-report "$work/drift.json"

# --- seeds per target (checkpoint: from a real ledger that rotates its key, at the end)
find fuzz/seeds -mindepth 1 -maxdepth 1 ! -name checkpoint -exec rm -rf {} +
WORK="$work" python3 - <<'PY'
import base64, json, os, pathlib, struct
work = pathlib.Path(os.environ["WORK"])
seeds = pathlib.Path("fuzz/seeds")
fx = pathlib.Path("tests/fixtures")
def put(target, name, data):
    d = seeds / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())

online = (work / "online.json").read_bytes()
offline = (work / "offline.json").read_bytes()
bundle = json.loads(online)
put("bundle", "online.json", online)
put("bundle", "offline.json", offline)
put("bundle", "drift.json", (work / "drift.json").read_bytes())

# dsse: the real envelope, the DSSE spec's example, the protocol vectors
env = bundle["envelope"]
put("dsse", "bundle-envelope.json", json.dumps(env))
ex = json.loads((fx / "dsse/protocol_example.json").read_text())
put("dsse", "protocol-example.json", json.dumps(ex["envelope"]))
for i, v in enumerate(json.loads((fx / "dsse/vectors.json").read_text())["vectors"]):
    if "envelope" in v:
        put("dsse", f"vector-{i}.json", json.dumps(v["envelope"]))

# claims: the signed statement, the status document, the event log
put("claims", "statement.json", base64.b64decode(env["payload"]))
put("claims", "status.json", pathlib.Path("examples/status.json").read_bytes())
put("claims", "eventlog.json", json.dumps(bundle["evidence"]["tpm"]["event_log"]))

# tpm_wire: selector byte + real structures
tpm = bundle["evidence"]["tpm"]
b64 = lambda s: base64.b64decode(s)
put("tpm_wire", "quote-attest", b"\x00" + b64(tpm["quote"]["attest"]))
put("tpm_wire", "certify-attest", b"\x00" + b64(tpm["sealed_key"]["certification"]["attest"]))
put("tpm_wire", "fixture-quote-msg", b"\x00" + (fx / "tpm/quote.msg").read_bytes())
put("tpm_wire", "quote-signature", b"\x01" + b64(tpm["quote"]["signature"]))
put("tpm_wire", "fixture-quote-sig", b"\x01" + (fx / "tpm/quote.sig").read_bytes())
put("tpm_wire", "ak-public", b"\x02" + b64(tpm["ak_public"]))
put("tpm_wire", "sealed-key-public", b"\x02" + b64(tpm["sealed_key"]["public"]))
put("tpm_wire", "pcr-selection", b"\x03" + bytes.fromhex("00000001000c03072000"))
put("tpm_wire", "pcr-file", b"\x04" + (fx / "tpm/quote.pcrs").read_bytes())
put("tpm_wire", "pcr-file2", b"\x04" + (fx / "tpm/quote2.pcrs").read_bytes())
put("tpm_wire", "tpm2b-public", b"\x04" + (fx / "tpm/ak.pub").read_bytes())
ek = (fx / "tpm/ek.pub").read_bytes()[2:]
ak = (fx / "tpm/ak.pub").read_bytes()[2:]
put("tpm_wire", "ek-public-ecc", b"\x06" + ek)
put("tpm_wire", "enroll-ek-ak", b"\x07" + bytes([len(ek) & 0xff]) + ek + ak)

# certchain: 2-byte length-prefixed DER certificates, leaf first
def pem_ders(text):
    out, cur = [], None
    for line in text.splitlines():
        if line.startswith("-----BEGIN"): cur = []
        elif line.startswith("-----END"): out.append(base64.b64decode("".join(cur))); cur = None
        elif cur is not None: cur.append(line.strip())
    return out
chain = lambda ders: b"".join(struct.pack(">H", len(d)) + d for d in ders)
inter = pem_ders((fx / "tpm/ca_intermediate.pem").read_text())
rootc = pem_ders((fx / "tpm/ca_root.pem").read_text())
p384 = (fx / "tpm/ek_p384.der").read_bytes()
put("certchain", "ek-p384", chain([p384]))
put("certchain", "ek-p384-with-issuer", chain([p384] + inter))
put("certchain", "ek-rsa2048", chain([(fx / "tpm/ek_rsa2048.der").read_bytes()]))
put("certchain", "other-ca-ek", chain([(fx / "tpm/other_ek_p384.der").read_bytes()] + rootc))
put("certchain", "bundle-chain", chain([b64(c) for c in tpm["ek_certificates"]]))
put("certchain", "pem", (fx / "tpm/ca_root.pem").read_bytes())

# uefi_log: the real firmware event logs (tests/fixtures/eventlogs/README.md)
for p in sorted((fx / "eventlogs").glob("*_eventlog")):
    put("uefi_log", p.name, p.read_bytes())

# config: selector byte + the shipped TOML files
put("config", "agent.toml", b"\x00" + pathlib.Path("examples/agent.toml").read_bytes())
put("config", "ledger.toml", b"\x01" + pathlib.Path("examples/ledger.toml").read_bytes())
for p in sorted(pathlib.Path("firmware-profiles").glob("*.toml")):
    put("config", "profile-" + p.name, b"\x02" + p.read_bytes())

# cbor: RFC 8949 Appendix A and a canonical log record leaf
for i, v in enumerate(json.loads((fx / "cbor/appendix_a.json").read_text())):
    put("cbor", f"appendix-a-{i:03}", bytes.fromhex(v["hex"]))
def cbor_head(major, n):
    if n < 24: return bytes([major << 5 | n])
    for ai, fmt in ((24, ">B"), (25, ">H"), (26, ">I"), (27, ">Q")):
        if n < (1 << (8 * struct.calcsize(fmt))): return bytes([major << 5 | ai]) + struct.pack(fmt, n)
def cbor(v):
    if isinstance(v, bool): return b"\xf5" if v else b"\xf4"
    if isinstance(v, int): return cbor_head(0, v)
    if isinstance(v, bytes): return cbor_head(2, len(v)) + v
    if isinstance(v, str): return cbor_head(3, len(v.encode())) + v.encode()
    if isinstance(v, dict):
        items = sorted((cbor(k), cbor(x)) for k, x in v.items())
        return cbor_head(5, len(items)) + b"".join(k + x for k, x in items)
    raise TypeError(v)
predicate = json.loads(base64.b64decode(env["payload"]))["predicate"]
record = {"version": 1, "received_at_ms": 1800000000000, "tenant": "acme", "agent_id": "agent-1",
          "verdict": "accepted", "attestation_id": predicate["attestation_id"],
          "policy_hash": predicate["policy_hash"], "submission": online}
leaf = cbor(record)
put("cbor", "log-record-accepted", leaf)
put("cbor", "log-record-refused", cbor({"version": 1, "received_at_ms": 1, "tenant": "t",
    "agent_id": "a", "verdict": "refused", "reason": "quote-binding", "detail": "x",
    "submission": b"{}"}))

# ledger_api: selector byte, then (for the answers) the verifier key line
notes = json.loads((fx / "merkle/signed_notes.json").read_text())
ed = notes["ed25519"]
put("ledger_api", "note-ed25519", b"\x02" + f"{ed['vkey']}\n{ed['signed_note']}".encode())
for i, v in enumerate(notes["ecdsa"]["vectors"]):
    put("ledger_api", f"note-ecdsa-{i}", b"\x02" + f"{v['vkey']}\n{v['signed_note']}".encode())
    body = v["signed_note"].split("\n\n")[0] + "\n"
    put("ledger_api", f"checkpoint-body-{i}", b"\x01" + body.encode())
enroll = {"ek_certificates": [base64.b64encode(p384).decode()],
          "ek_public": base64.b64encode(ek).decode(), "ak_public": base64.b64encode(ak).decode()}
put("ledger_api", "enroll-request", b"\x00" + json.dumps(enroll).encode())
put("ledger_api", "enroll-proof", b"\x00" + json.dumps({"secret": "AAEC"}).encode())
h = lambda b: base64.b64encode(b).decode()
v0 = notes["ecdsa"]["vectors"][0]
entry = {"index": 0, "received_at_ms": 1800000000000, "tenant": "acme", "agent_id": "agent-1",
         "verdict": "accepted", "attestation_id": predicate["attestation_id"],
         "policy_hash": predicate["policy_hash"], "leaf": h(leaf),
         "proof": {"checkpoint": v0["signed_note"], "hashes": [h(bytes(32))]}}
put("ledger_api", "entry", b"\x03" + f"{v0['vkey']}\n{json.dumps(entry)}".encode())
put("ledger_api", "entries", b"\x03" + f"{v0['vkey']}\n{json.dumps({'entries': [entry], 'next_after': 0})}".encode())
receipt = {"index": 0, "received_at_ms": 1, "leaf_hash": h(bytes(32)),
           "inclusion_proof": [h(bytes(32))], "checkpoint": v0["signed_note"]}
put("ledger_api", "receipt", b"\x04" + f"{v0['vkey']}\n{json.dumps(receipt)}".encode())
put("ledger_api", "submit-response", b"\x04" + f"{v0['vkey']}\n{json.dumps({'verdict': 'refused', 'reason': 'freshness', 'receipt': receipt})}".encode())
cons = {"old_size": 1, "new_size": 2, "proof": [h(bytes(32))]}
put("ledger_api", "consistency", b"\x05" + f"{v0['vkey']}\n{v0['signed_note']}\n--\n{v0['signed_note']}\n--\n{json.dumps(cons)}".encode())
# snp: selector byte + a real Milan report (raw, hex), AMD's ASK/ARK, a GHCB table of them
raw = bytes.fromhex("".join((fx / "snp/report_milan.hex").read_text().split()))
put("snp", "report-raw", b"\x00" + raw)
put("snp", "report-hex", b"\x04" + (fx / "snp/report_milan.hex").read_bytes())
amd = pem_ders((fx / "snp/cert_chain_milan").read_text())
for i, d in enumerate(amd):
    put("snp", f"cert-{i}", b"\x02" + d)
def guid(a, b, c, d): return struct.pack(">IHHQ", a, b, c, d)
def cert_table(entries):
    off, head, body = 24 * (len(entries) + 1), b"", b""
    for g, d in entries:
        head += g + struct.pack("<II", off + len(body), len(d)); body += d
    return head + bytes(24) + body
table = cert_table([(guid(0x4ab7b379, 0xbbac, 0x4fe4, 0xa02f05aef327c782), amd[0]),
                    (guid(0xc0b406a4, 0xa803, 0x4952, 0x97433fb6014cd0ae), amd[1])])
put("snp", "table-ark-ask", b"\x01" + table)
put("snp", "report-and-table", b"\x03" + raw + table)
import hashlib
mv = json.loads((fx / "merkle/rfc6962_vectors.json").read_text())
for i, v in enumerate(mv["inclusion_proofs"][:12]):
    leaf = hashlib.sha256(b"\0" + bytes.fromhex(mv["leaves"][v["index"]])).digest()
    root = bytes.fromhex(mv["roots"][v["size"] - 1])
    raw = struct.pack(">QQ", v["index"], v["size"]) + leaf + root + b"".join(bytes.fromhex(x) for x in v["proof"])
    put("ledger_api", f"inclusion-{i}", b"\x07" + raw)
PY
find fuzz/seeds -type f | sed 's|/[^/]*$||' | sort | uniq -c

# checkpoint: a real ledger process rotating its key once (seeds and trusted history)
ATTESTOR_REWRITE_FUZZ_SEEDS=1 cargo test --quiet -p attestor --test it fuzz_fixtures::a_rotating_ledger_yields_checkpoint_seeds_that_verify
