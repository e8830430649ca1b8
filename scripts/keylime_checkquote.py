"""Times Keylime's quote check, keylime.tpm.tpm_util.checkquote, on one of our quotes.

Usage: keylime_checkquote.py DIR, where DIR holds the files `cargo bench --bench attest`
writes with ATTESTOR_BENCH_QUOTE_DIR set (tpm2-tools' formats). Prints the median time of
one call in nanoseconds on stdout. Before timing it proves Keylime accepts the quote and
refuses it with another nonce, so the figure is that of a check that ran to the end.
Run by scripts/bench.sh inside a throw-away virtualenv with keylime from PyPI.
"""

import pathlib
import statistics
import sys
import time

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from keylime.tpm import tpm_util

CURVES = {65: ec.SECP256R1(), 97: ec.SECP384R1()}


def main() -> int:
    d = pathlib.Path(sys.argv[1])
    point = (d / "ak.sec1").read_bytes()
    if len(point) not in CURVES:
        print(f"the AK is not a P-256 or P-384 point ({len(point)} bytes)", file=sys.stderr)
        return 1
    ak = ec.EllipticCurvePublicKey.from_encoded_point(CURVES[len(point)], point)
    ak_pem = ak.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    msg, sig, pcrs = (d / "quote.msg").read_bytes(), (d / "quote.sig").read_bytes(), (d / "quote.pcrs").read_bytes()
    nonce, hash_alg = (d / "quote.qualifying").read_bytes(), (d / "quote.hash").read_text().strip()

    def check(n: bytes) -> dict:
        return tpm_util.checkquote(ak_pem, n, sig, msg, pcrs, hash_alg)

    if not check(nonce):
        print("Keylime returned no PCRs for our quote", file=sys.stderr)
        return 1
    try:
        check(bytes(len(nonce)))
    except Exception:  # Keylime raises a bare Exception for a nonce mismatch.
        pass
    else:
        print("Keylime accepted our quote with another nonce", file=sys.stderr)
        return 1

    # Calls per sample so that one sample lasts about half a second.
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < 0.5:
        check(nonce)
        calls += 1
    samples = []
    for _ in range(9):
        start = time.perf_counter_ns()
        for _ in range(calls):
            check(nonce)
        samples.append((time.perf_counter_ns() - start) / calls)
    print(f"{statistics.median(samples):.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
