#!/usr/bin/python3
"""Independent C2SP tlog-tiles client: fetch a tiled transparency log and verify it.

Written only from the C2SP specifications (tlog-tiles, tlog-checkpoint, signed-note,
tlog-cosignature) and RFC 6962 section 2.1, as an independent check of attestor's
tiles: it shares no code or logic with attestor's Rust implementation.

  tlog_tiles_reader.py --url URL --vkey VKEY [--entries] [--witness VKEY ...] [--quorum K]
  tlog_tiles_reader.py --self-test

Success: one JSON line on stdout {"origin","size","root","tiles_fetched",
"entries_checked","cosignatures"}, exit 0. Any fetch or verification failure: a
one-line reason on stderr, exit 1. Command-line usage errors: exit 2 (argparse).
"""
import argparse, base64, contextlib, gzip, hashlib, http.client, http.server, io, json
import re, struct, sys, threading, urllib.error, urllib.request, zlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

WIDTH, TIMEOUT, MAX_SIGNATURES = 256, 10, 100


class Fail(Exception):
    """A fetch or verification failure; str() is the one-line reason."""


def sha256(b): return hashlib.sha256(b).digest()
def leaf_hash(entry): return sha256(b"\x00" + entry)
def node_hash(left, right): return sha256(b"\x01" + left + right)
def b64(b): return base64.b64encode(b).decode()
def valid_name(n): return bool(n) and "+" not in n and not any(c.isspace() for c in n)


def b64decode_strict(s, what):
    try:
        raw = base64.b64decode(s, validate=True)
    except ValueError:
        raise Fail(f"{what}: invalid base64") from None
    if b64(raw) != s:
        raise Fail(f"{what}: non-canonical base64")
    return raw


def tile_path(n, width=WIDTH):
    """Tile index as zero-padded 3-digit elements, all but the last x-prefixed, plus .p/<W>."""
    parts = [f"{n % 1000:03d}"]
    while n >= 1000:
        n //= 1000
        parts.insert(0, f"x{n % 1000:03d}")
    return "/".join(parts) + ("" if width == WIDTH else f".p/{width}")


def tile_name(level, n, count):
    """Name of tile n at a level holding count hashes (entry bundles: level "entries")."""
    return f"{level}/{tile_path(n, min(WIDTH, count - n * WIDTH))}"


class Verifier:
    """A vkey: <name>+<8 hex key id>+base64(type byte || public key)."""

    def __init__(self, vkey):
        parts = vkey.split("+", 2)  # the base64 key may itself contain "+"
        if len(parts) != 3 or not valid_name(parts[0]) or not re.fullmatch(r"[0-9a-fA-F]{8}", parts[1]):
            raise Fail(f"malformed vkey {vkey!r}")
        self.name, raw = parts[0], b64decode_strict(parts[2], f"vkey {parts[0]}")
        self.type, key = (raw[0], raw[1:]) if raw else (None, b"")
        try:
            if self.type in (0x01, 0x04):
                self.key = ed25519.Ed25519PublicKey.from_public_bytes(key)
                self.key_id = sha256(self.name.encode() + b"\n" + raw)[:4]
            elif self.type == 0x02:
                self.key = serialization.load_der_public_key(key)
                if not isinstance(self.key, ec.EllipticCurvePublicKey) or self.key.curve.name != "secp256r1":
                    raise ValueError("not a P-256 public key")
                self.key_id = sha256(key)[:4]
            else:
                raise ValueError(f"unsupported signature type {self.type}")
        except Exception as e:  # the cryptography loaders raise assorted types
            raise Fail(f"vkey {self.name}: {e}") from None
        if bytes.fromhex(parts[1]) != self.key_id:
            raise Fail(f"vkey {self.name}: key id {parts[1]} does not match computed {self.key_id.hex()}")

    def verify(self, text, sig):
        try:
            if self.type == 0x01:
                self.key.verify(sig, text)
            elif self.type == 0x02:
                self.key.verify(sig, text, ec.ECDSA(hashes.SHA256()))
            else:  # 0x04: u64 timestamp || Ed25519 signature over the cosignature/v1 message
                if len(sig) != 72 or sig[0] & 0x80:
                    return False
                ts = struct.unpack(">Q", sig[:8])[0]
                self.key.verify(sig[8:], b"cosignature/v1\ntime %d\n" % ts + text)
            return True
        except (InvalidSignature, ValueError):
            return False


def parse_note(data):
    """Signed note -> (note text bytes, [(key name, key id, signature)])."""
    try:
        s = data.decode("utf-8")
    except UnicodeDecodeError:
        raise Fail("checkpoint: not valid UTF-8") from None
    if any(c < " " and c != "\n" for c in s):
        raise Fail("checkpoint: contains control characters other than newline")
    cut = s.rfind("\n\n")
    if not s.endswith("\n") or cut < 0 or cut + 2 == len(s):
        raise Fail("checkpoint: no blank line followed by signature lines")
    lines = s[cut + 2:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise Fail(f"checkpoint: more than {MAX_SIGNATURES} signature lines")
    sigs = []
    for line in lines:
        fields = line[2:].split(" ")
        if not line.startswith("\u2014 ") or len(fields) != 2 or not valid_name(fields[0]):
            raise Fail(f"checkpoint: malformed signature line {line!r}")
        raw = b64decode_strict(fields[1], f"checkpoint signature by {fields[0]}")
        if len(raw) < 5:
            raise Fail(f"checkpoint: signature by {fields[0]} too short")
        sigs.append((fields[0], raw[:4], raw[4:]))
    return s[:cut + 1].encode(), sigs


def parse_checkpoint(text):
    lines = text.decode()[:-1].split("\n")
    if len(lines) < 3 or not all(lines):
        raise Fail("checkpoint: body must be origin, size, root hash and non-empty extension lines")
    if not re.fullmatch(r"0|[1-9][0-9]*", lines[1]) or int(lines[1]) >= 1 << 64:
        raise Fail(f"checkpoint: bad tree size {lines[1]!r}")
    root = b64decode_strict(lines[2], "checkpoint root hash")
    if len(root) != 32:
        raise Fail(f"checkpoint: root hash is {len(root)} bytes, expected 32")
    return lines[0], int(lines[1]), root


def signed_by(v, text, sigs, what):
    """Signatures matching v's name and key id: all must verify; return how many there are."""
    mine = [sig for name, kid, sig in sigs if name == v.name and kid == v.key_id]
    if not all(v.verify(text, sig) for sig in mine):
        raise Fail(f"{what} does not verify")
    return len(mine)


def perfect_root(hashes):
    while len(hashes) > 1:
        hashes = [node_hash(hashes[i], hashes[i + 1]) for i in range(0, len(hashes), 2)]
    return hashes[0]


def subtree(levels, lo, hi):
    """RFC 6962 MTH of leaves [lo, hi), taking aligned 256**L-leaf subtrees from the tiles."""
    n = hi - lo
    for level in reversed(range(len(levels))):
        if n == WIDTH ** level and lo % n == 0:
            return levels[level][lo // n]
    k = 1 << ((n - 1).bit_length() - 1)  # largest power of two < n
    return node_hash(subtree(levels, lo, lo + k), subtree(levels, lo + k, hi))


def verify(fetch, vkey, witnesses=(), quorum=None, entries=False):
    log = Verifier(vkey)
    if log.type not in (0x01, 0x02):
        raise Fail(f"--vkey {log.name}: checkpoint key must be type 0x01 (Ed25519) or 0x02 (ECDSA)")
    wits = [Verifier(w) for w in witnesses]
    for w in wits:
        if w.type != 0x04:
            raise Fail(f"--witness {w.name}: must be type 0x04 (Ed25519 cosignature)")
    quorum = len(wits) if quorum is None else quorum
    if not 0 <= quorum <= len(wits):
        raise Fail(f"--quorum {quorum} is not between 0 and the {len(wits)} witnesses given")

    text, sigs = parse_note(fetch("checkpoint"))
    origin, size, root = parse_checkpoint(text)
    if not signed_by(log, text, sigs, "checkpoint signature"):
        raise Fail(f"checkpoint has no signature by {log.name} with key id {log.key_id.hex()}")
    cosigned = sum(1 for w in wits if signed_by(w, text, sigs, f"cosignature by witness {w.name}"))
    if cosigned < quorum:
        raise Fail(f"checkpoint has {cosigned} valid witness cosignatures, quorum is {quorum}")

    # levels[L] = all size // 256**L hashes at level L, from its full tiles and its partial tile.
    levels, fetched = [], 0
    while size // WIDTH ** len(levels):
        level, count = len(levels), size // WIDTH ** len(levels)
        levels.append([])
        for n in range(-(-count // WIDTH)):
            name, want = tile_name(level, n, count), 32 * min(WIDTH, count - n * WIDTH)
            data = fetch(f"tile/{name}")
            fetched += 1
            if len(data) != want:
                raise Fail(f"tile {name}: {len(data)} bytes, expected {want}")
            levels[level] += [data[i:i + 32] for i in range(0, len(data), 32)]
    for level in range(1, len(levels)):
        for j, h in enumerate(levels[level]):
            if perfect_root(levels[level - 1][j * WIDTH:(j + 1) * WIDTH]) != h:
                raise Fail(f"tile {tile_name(level, j // WIDTH, len(levels[level]))}: hash {j % WIDTH} "
                           f"does not match the tree hash of tile {level - 1}/{tile_path(j)}")
    computed = subtree(levels, 0, size) if size else sha256(b"")
    if computed != root:
        raise Fail(f"root mismatch: tiles give {b64(computed)}, checkpoint says {b64(root)}")

    checked = 0
    for n in range(-(-size // WIDTH) if entries else 0):
        name, width = tile_name("entries", n, size), min(WIDTH, size - n * WIDTH)
        data, pos, k = fetch(f"tile/{name}"), 0, 0
        while pos < len(data):
            end = pos + 2 + int.from_bytes(data[pos:pos + 2], "big")
            if k == width:
                raise Fail(f"bundle {name}: {len(data) - pos} trailing bytes after {width} entries")
            if pos + 2 > len(data) or end > len(data):
                raise Fail(f"bundle {name}: entry {k} truncated")
            if leaf_hash(data[pos + 2:end]) != levels[0][n * WIDTH + k]:
                raise Fail(f"bundle {name}: entry {n * WIDTH + k} does not hash to its level-0 tile hash")
            pos, k = end, k + 1
        if k != width:
            raise Fail(f"bundle {name}: {k} entries, expected {width}")
        checked += k
    return {"origin": origin, "size": size, "root": b64(root), "tiles_fetched": fetched,
            "entries_checked": checked, "cosignatures": cosigned}


def http_fetcher(base):
    def fetch(path):
        url = f"{base.rstrip('/')}/{path}"
        req = urllib.request.Request(url, headers={"Accept-Encoding": "gzip, identity"})
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
                status, data = resp.status, resp.read()
                enc = (resp.headers.get("Content-Encoding") or "identity").strip().lower()
        except urllib.error.HTTPError as e:
            raise Fail(f"GET {url}: HTTP {e.code}") from None
        except (OSError, http.client.HTTPException) as e:
            raise Fail(f"GET {url}: {getattr(e, 'reason', e)}") from None
        if status != 200:
            raise Fail(f"GET {url}: HTTP {status}")
        if enc == "gzip":
            try:
                return gzip.decompress(data)
            except (OSError, EOFError, zlib.error) as e:
                raise Fail(f"GET {url}: bad gzip body: {e}") from None
        if enc != "identity":
            raise Fail(f"GET {url}: unsupported Content-Encoding {enc}")
        return data
    return fetch


# ---- self-test: logs built naively in memory, no tile logic shared with verify() ----

def naive_mth(entries):
    if not entries:
        return sha256(b"")
    if len(entries) == 1:
        return leaf_hash(entries[0])
    k = 1 << ((len(entries) - 1).bit_length() - 1)
    return node_hash(naive_mth(entries[:k]), naive_mth(entries[k:]))


def build_log(entries):
    files, s, level = {}, len(entries), 0
    while s // WIDTH ** level:
        span = WIDTH ** level
        hs = [naive_mth(entries[i * span:(i + 1) * span]) for i in range(s // span)]
        for n in range(0, len(hs), WIDTH):
            p = tile_path(n // WIDTH, len(hs[n:n + WIDTH]))
            files[f"tile/{level}/{p}"] = b"".join(hs[n:n + WIDTH])
            if level == 0:
                files[f"tile/entries/{p}"] = b"".join(struct.pack(">H", len(e)) + e for e in entries[n:n + WIDTH])
        level += 1
    return files


def fake_fetcher(files):
    def fetch(path):
        if path not in files:
            raise Fail(f"GET {path}: HTTP 404")
        return files[path]
    return fetch


def self_test():
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    def ed_vkey(name, priv, typ):
        raw = bytes([typ]) + priv.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return "%s+%s+%s" % (name, sha256(name.encode() + b"\n" + raw)[:4].hex(), b64(raw))
    def sig_line(vkey, sig):
        name, key_id, _ = vkey.split("+", 2)
        return "\u2014 %s %s\n" % (name, b64(bytes.fromhex(key_id) + sig))
    log_key, w1, w2 = (ed25519.Ed25519PrivateKey.generate() for _ in range(3))
    log_vk, w1_vk, w2_vk = ed_vkey("example.com/log", log_key, 1), ed_vkey("w1.example", w1, 4), ed_vkey("w2.example", w2, 4)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    spki = ec_key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    ec_vk = "example.com/log+%s+%s" % (sha256(spki)[:4].hex(), b64(b"\x02" + spki))
    flip = lambda b: b[:-1] + bytes([b[-1] ^ 1])

    def checkpoint(body, ec_sign=False, cosigners=(w1,), corrupt=None):
        text = body.encode()
        sig = ec_key.sign(text, ec.ECDSA(hashes.SHA256())) if ec_sign else log_key.sign(text)
        out = body + "\n" + sig_line(ec_vk if ec_sign else log_vk, flip(sig) if corrupt == "sig" else sig)
        for w in cosigners:
            cosig = struct.pack(">Q", 1700000000) + w.sign(b"cosignature/v1\ntime 1700000000\n" + text)
            out += sig_line(w1_vk if w is w1 else w2_vk, flip(cosig) if corrupt == "cosig" else cosig)
        return out.encode()

    checks = []
    def run(files, want=None, vkey=log_vk, witnesses=(w1_vk,), **kw):
        """verify() must succeed (want None) or fail with a reason containing want."""
        try:
            res, err = verify(fake_fetcher(files), vkey, witnesses, **kw), None
        except Fail as e:
            res, err = None, str(e)
        assert (want is None and err is None) or (want and err and want in err), f"wanted {want!r}, got {err!r}"
        checks.append(want)
        return res
    altered = lambda files, path, new: {k: v for k, v in {**files, path: new}.items() if v is not None}

    assert [tile_path(1234067), tile_path(1000), tile_path(0, 5)] == ["x001/x234/067", "x001/000", "000.p/5"]
    for size in (0, 1, 2, 3, 255, 256, 257, 511, 512, 65536, 70000):
        entries = [b"x" * 1000 if i == 2 else b"e%d" % i * (i % 7) for i in range(size)]
        files, root = build_log(entries), naive_mth(entries)
        body = f"example.com/log\n{size}\n{b64(root)}\n"
        files["checkpoint"] = checkpoint(body)
        tiles = sorted(p for p in files if p.startswith("tile/") and not p.startswith("tile/entries/"))
        assert run(files, entries=True) == {"origin": "example.com/log", "size": size, "root": b64(root),
                                            "tiles_fetched": len(tiles), "entries_checked": size, "cosignatures": 1}
        if size == 70000:  # the tlog-tiles example: 274 level-0, 2 level-1 and 1 level-2 tiles
            assert len(tiles) == 277 and {"tile/0/273.p/112", "tile/1/001.p/17", "tile/2/000.p/1"} <= set(tiles)
        run(altered(files, "checkpoint", checkpoint(body.replace(b64(root), b64(flip(root))))), "root mismatch")
        for p in tiles if size < 600 else [t for t in tiles if t < "tile/0/001" or t > "tile/0/272"]:
            # A partial level-0 tile feeds only the root; every other hash is also checked a level up.
            run(altered(files, p, flip(files[p])), "root mismatch" if p.startswith("tile/0/") and ".p/" in p else "does not match")
            run(altered(files, p, files[p][:-32]), "bytes, expected")
            run(altered(files, p, files[p] + bytes(32)), "bytes, expected")
            run(altered(files, p, None), "HTTP 404")
        if size:
            last = max(p for p in files if p.startswith("tile/entries/"))
            for bad, want in ((flip(files[last]), "entry"), (files[last][:-1], "entry"),
                              (files[last] + b"\0\0", "trailing bytes"), (b"", "0 entries")):
                run(altered(files, last, bad), want, entries=True)
            assert run(altered(files, last, b""))["entries_checked"] == 0

    files = build_log([b"a", b"b", b"c"])
    body = f"example.com/log\n3\n{b64(naive_mth([b'a', b'b', b'c']))}\n"
    ok = lambda cp, want=None, **kw: run(altered(files, "checkpoint", cp), want, **kw)
    ok(checkpoint(body, corrupt="sig"), "checkpoint signature does not verify")
    ok(checkpoint(body), "no signature", vkey=ed_vkey("example.com/log", ed25519.Ed25519PrivateKey.generate(), 1))
    ok(checkpoint(body), "does not match computed", vkey=log_vk[:16] + "00000000" + log_vk[24:])
    ok(checkpoint(body), "type 0x01", vkey=w1_vk)
    assert ok(checkpoint(body, ec_sign=True), vkey=ec_vk)["size"] == 3
    ok(checkpoint(body), "no signature", vkey=ec_vk)
    ok(checkpoint(body), "1 valid witness cosignatures, quorum is 2", witnesses=[w1_vk, w2_vk])
    assert ok(checkpoint(body), witnesses=[w1_vk, w2_vk], quorum=1)["cosignatures"] == 1
    assert ok(checkpoint(body, cosigners=(w1, w2)), witnesses=[w1_vk, w2_vk])["cosignatures"] == 2
    ok(checkpoint(body, cosigners=(w2,), corrupt="cosig"), "cosignature by witness w2.example does not verify", witnesses=[w2_vk])
    ok(checkpoint(body), "quorum is 1", witnesses=[w2_vk])
    assert ok(checkpoint(body + "extension line\n"))["size"] == 3
    ok(checkpoint(body.replace("\n3\n", "\n03\n")), "bad tree size")
    ok(checkpoint(body.replace("\n3\n", "\n3\n\n")), "non-empty")
    ok(checkpoint(body.replace("=\n", "\n")), "invalid base64")
    ok(checkpoint(body).replace(b"\n", b"\r\n"), "control characters")
    ok(checkpoint(body).replace(b"\n\n", b"\n"), "no blank line")
    ok(checkpoint(body).replace("\u2014 ".encode(), b"- "), "malformed signature line")

    # End to end through main() and urllib, with gzip-encoded entry bundles.
    files["checkpoint"] = checkpoint(body)
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args): pass
        def do_GET(self):
            data, gz = files.get(self.path.removeprefix("/log/")), "/entries/" in self.path
            if data is None or not self.path.startswith("/log/"):
                return self.send_error(404)
            self.send_response(200)
            self.send_header("Content-Encoding", "gzip" if gz else "identity")
            self.end_headers()
            self.wfile.write(gzip.compress(data) if gz else data)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}/log/"
    for args, code, want in (([url, "--entries", "--witness", w1_vk], 0, '"entries_checked":3,"cosignatures":1}'),
                             ([url + "x"], 1, "/log/x/checkpoint: HTTP 404")):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(["--url", args[0], "--vkey", log_vk] + args[1:])
        assert rc == code and want in (out if code == 0 else err).getvalue(), (rc, out.getvalue(), err.getvalue())
        checks.append(want)
    srv.shutdown()
    srv.server_close()
    print(f"self-test: {len(checks)} checks passed")
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description="Verify a C2SP tlog-tiles log (checkpoint, tiles, entry bundles).")
    ap.add_argument("--url", help="log prefix URL; fetches <url>/checkpoint and <url>/tile/...")
    ap.add_argument("--vkey", help="verifier key of the log's checkpoint signature (type 0x01 or 0x02)")
    ap.add_argument("--entries", action="store_true", help="also fetch and check every entry bundle")
    ap.add_argument("--witness", action="append", default=[], help="witness vkey (type 0x04); repeatable")
    ap.add_argument("--quorum", type=int, help="valid cosignatures required (default: all --witness)")
    ap.add_argument("--self-test", action="store_true", help="run the built-in tests; needs no server")
    a = ap.parse_args(argv)
    if a.self_test:
        try:
            return self_test()
        except AssertionError as e:
            print(f"self-test failed: {e}", file=sys.stderr)
            return 1
    if not a.url or not a.vkey:
        ap.error("--url and --vkey are required")
    try:
        result = verify(http_fetcher(a.url), a.vkey, a.witness, a.quorum, a.entries)
    except Fail as e:
        print(str(e).replace("\n", " "), file=sys.stderr)
        return 1
    except Exception as e:  # never a traceback, whatever the server sends
        print(f"unexpected error: {type(e).__name__}: {e}".replace("\n", " "), file=sys.stderr)
        return 1
    print(json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
