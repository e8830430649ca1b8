//! TLS between the ledger and PostgreSQL, on the throw-away cluster (scripts/postgres.sh:
//! TLS on, plaintext also accepted, a role that logs in only with a client certificate).
//! The ledger's connections must be TLS, verified against the configured CA and host,
//! never downgraded, and able to authenticate by certificate.

use std::path::Path;
use std::time::Duration;

use crate::support::postgres;
use attestor_ledger::config::LedgerConfig;
use attestor_ledger::service::open_store;
use attestor_ledger::store::postgres::{PostgresOptions, PostgresStore};
use attestor_ledger::store::{LedgerStore, StoreError};
use attestor_net::tls::{database_client_config, pki_init};

fn options(ca: &Path, client: Option<(&Path, &Path)>) -> PostgresOptions {
    PostgresOptions {
        tls: Some(database_client_config(ca, client).unwrap()),
        ..PostgresOptions::new(Duration::from_secs(10))
    }
}

fn database_name(url: &str) -> &str {
    url.rsplit_once('/').unwrap().1
}

/// Server processes serving `database`, other than the one asking, with or without TLS.
fn connections(url: &str, tls: bool) -> i64 {
    postgres::query_i64(
        url,
        &format!(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.datname = '{}' AND s.ssl = {tls} AND a.application_name <> '{}'",
            database_name(url),
            postgres::APPLICATION_NAME,
        ),
    )
}

#[test]
fn the_ledger_reaches_its_database_over_verified_tls_only() {
    let url = postgres::database();
    let store = PostgresStore::open(&url, options(&postgres::tls_dir().join("ca.pem"), None))
        .expect("TLS to the test cluster, verified against its CA");
    assert_eq!(store.len().unwrap(), 0);
    assert!(
        connections(&url, true) >= 1,
        "no TLS connection from the store"
    );
    assert_eq!(
        connections(&url, false),
        0,
        "a plaintext connection from the store"
    );
}

#[test]
fn a_database_certificate_from_another_ca_or_for_another_host_is_refused() {
    let url = postgres::database();
    let other = tempfile::tempdir().unwrap();
    let other_pki = pki_init(other.path(), &[], &["127.0.0.1".to_string()]).unwrap();
    let refusal = |url: &str, ca: &Path| match PostgresStore::open(url, options(ca, None)) {
        Err(StoreError::Database(message)) => message,
        Err(e) => panic!("unexpected error {e:?}"),
        Ok(_) => panic!("connected to {url} trusting {}", ca.display()),
    };
    let message = refusal(&url, &other_pki.ca_cert);
    assert!(message.contains("UnknownIssuer"), "{message}");
    // The server's certificate names 127.0.0.1, not localhost.
    let by_name = url.replace("127.0.0.1", "localhost");
    let message = refusal(&by_name, &postgres::tls_dir().join("ca.pem"));
    assert!(message.contains("not valid for name"), "{message}");
}

#[test]
fn the_ledger_can_log_in_with_a_client_certificate() {
    let url = postgres::database().replace("attestor@", "attestor_cert@");
    let tls = postgres::tls_dir();
    let client = (tls.join("client.pem"), tls.join("client.key"));
    let store = PostgresStore::open(
        &url,
        options(&tls.join("ca.pem"), Some((&client.0, &client.1))),
    )
    .expect("certificate login");
    assert_eq!(store.len().unwrap(), 0);
    // The same role without the certificate is turned away by the server.
    let Err(StoreError::Database(message)) =
        PostgresStore::open(&url, options(&tls.join("ca.pem"), None))
    else {
        panic!("logged in as attestor_cert without a certificate");
    };
    assert!(message.contains("certificate"), "{message}");
}

#[test]
fn tls_settings_and_sslmode_must_agree() {
    let url = postgres::database();
    let ca = postgres::tls_dir().join("ca.pem");
    let Err(StoreError::Database(message)) =
        PostgresStore::open(&format!("{url}?sslmode=disable"), options(&ca, None))
    else {
        panic!("sslmode=disable accepted with TLS configured");
    };
    assert!(message.contains("sslmode=disable"), "{message}");
    let Err(StoreError::Database(message)) = PostgresStore::open(
        &format!("{url}?sslmode=require"),
        PostgresOptions::new(Duration::from_secs(10)),
    ) else {
        panic!("sslmode=require accepted without TLS configured");
    };
    assert!(message.contains("storage_tls"), "{message}");
}

/// From the configuration file to the connection: `[storage_tls]` is what the ledger uses.
#[test]
fn the_ledger_configuration_turns_tls_on() {
    let url = postgres::database();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
        listen = "127.0.0.1:0"
        state_dir = "state"
        origin = "ledger.test/attestor"
        profile = "profile.toml"
        storage = "{url}"
        [tls]
        ca = "ca.pem"
        cert = "ledger.pem"
        key = "ledger.key"
        [tenants.acme]
        policy_hash = "{hash}"
        [storage_tls]
        ca = "{ca}"
        "#,
        hash = "ab".repeat(32),
        ca = postgres::tls_dir().join("ca.pem").display(),
    );
    let config = LedgerConfig::parse(&text, &dir.path().join("ledger.toml")).unwrap();
    let store = open_store(&config).expect("the configured TLS connection");
    assert_eq!(store.len().unwrap(), 0);
    assert!(connections(&url, true) >= 1);
    assert_eq!(connections(&url, false), 0);
}
