//! An mTLS PKI made with `openssl`, as an operator's own CA would issue it, independent of
//! the quick-start `attestor pki init`: a root CA (ECDSA P-256), an issuing intermediate,
//! and leaf certificates that carry their chain. Unlike the quick start it lets two tenants
//! hold the same agent id, as a production CA may.
//!
//! Layout (what `LedgerSpec::pki` expects): `ca.pem` (the root, the only anchor),
//! `ledger.pem`/`ledger.key` (for IP 127.0.0.1), `agents/<tenant>.<id>.pem`/`.key`, and
//! operators' `operators/<tenant>.<name>.pem`/`.key` ([`add_operator`]).

use std::path::Path;
use std::process::Command;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new(super::require_tool("openssl"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("cannot run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes `extensions` to a file and signs `name`'s CSR with `issuer`'s key.
fn issue(dir: &Path, name: &str, subject: &str, issuer: &str, extensions: &str) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            subject,
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ],
    );
    std::fs::write(dir.join(format!("{name}.ext")), extensions).unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{issuer}.pem"),
            "-CAkey",
            &format!("{issuer}.key"),
            "-CAcreateserial",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.pem"),
        ],
    );
}

/// Creates the PKI in `dir` with one client certificate per (tenant, agent id).
pub fn create(dir: &Path, agents: &[(&str, &str)]) {
    std::fs::create_dir_all(dir.join("agents")).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/O=Example Operator/CN=Example Operator Root CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    issue(
        dir,
        "issuing",
        "/O=Example Operator/CN=Example Operator Issuing CA",
        "ca",
        "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n",
    );
    let with_chain = |name: &str| {
        let leaf = std::fs::read_to_string(dir.join(format!("{name}.pem"))).unwrap();
        let issuing = std::fs::read_to_string(dir.join("issuing.pem")).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), leaf + &issuing).unwrap();
    };
    issue(
        dir,
        "ledger",
        "/O=Example Operator/CN=ledger",
        "issuing",
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n",
    );
    with_chain("ledger");
    for (tenant, id) in agents {
        let name = format!("agents/{tenant}.{id}");
        issue(
            dir,
            &name,
            &format!("/O=Example Operator/OU={tenant}/CN={id}"),
            "issuing",
            &format!(
                "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                 extendedKeyUsage=clientAuth\n\
                 subjectAltName=URI:spiffe://attestor/tenant/{tenant}/agent/{id}\n"
            ),
        );
        with_chain(&name);
    }
}

/// Issues an operator's client certificate (`.../tenant/<tenant>/operator/<name>`) from the
/// PKI [`create`] made in `dir`: `operators/<tenant>.<name>.pem`/`.key`.
pub fn add_operator(dir: &Path, tenant: &str, name: &str) {
    std::fs::create_dir_all(dir.join("operators")).unwrap();
    let file = format!("operators/{tenant}.{name}");
    issue(
        dir,
        &file,
        &format!("/O=Example Operator/OU={tenant}/CN={name}"),
        "issuing",
        &format!(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=clientAuth\n\
             subjectAltName=URI:spiffe://attestor/tenant/{tenant}/operator/{name}\n"
        ),
    );
    let leaf = std::fs::read_to_string(dir.join(format!("{file}.pem"))).unwrap();
    let issuing = std::fs::read_to_string(dir.join("issuing.pem")).unwrap();
    std::fs::write(dir.join(format!("{file}.pem")), leaf + &issuing).unwrap();
}
