//! The two store backends behind one handle, so a store-level test runs against both:
//! write the test as `fn name(backend: &Backend)` and list it in
//! [`on_both_backends!`](crate::on_both_backends).

use std::sync::Arc;
use std::time::Duration;

use attestor_ledger::store::embedded::EmbeddedStore;
use attestor_ledger::store::postgres::{PostgresOptions, PostgresStore};
use attestor_ledger::store::LedgerStore;

/// Generates `embedded::NAME` and `postgres::NAME` tests calling `NAME(&Backend)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(#[test]
            fn $name() {
                super::$name(&$crate::support::stores::Backend::embedded())
            })*
        }
        mod postgres {
            $(#[test]
            fn $name() {
                super::$name(&$crate::support::stores::Backend::postgres())
            })*
        }
    };
}

/// Where a test's store lives.
pub enum Backend {
    /// A SQLite file in a private directory.
    Embedded(tempfile::TempDir),
    /// A private database on the test PostgreSQL, and the lease holder every handle
    /// opened through [`Backend::open`] uses (so a reopened store still holds the lease).
    Postgres { url: String, holder: String },
}

impl Backend {
    pub fn embedded() -> Backend {
        Backend::Embedded(tempfile::tempdir().unwrap())
    }

    pub fn postgres() -> Backend {
        Backend::Postgres {
            url: super::postgres::database(),
            holder: format!("test-{}", uuid::Uuid::new_v4().simple()),
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Backend::Postgres { .. })
    }

    /// Opens the store, as this backend's one writer, and takes the sequencer lease.
    pub fn open(&self) -> Arc<dyn LedgerStore> {
        let store = self.try_open().unwrap();
        assert!(
            store.claim_sequencer().unwrap().is_some(),
            "lease not taken"
        );
        store
    }

    /// Opens the store without claiming anything.
    pub fn try_open(&self) -> Result<Arc<dyn LedgerStore>, attestor_ledger::store::StoreError> {
        Ok(match self {
            Backend::Embedded(dir) => Arc::new(EmbeddedStore::open(&dir.path().join("ledger.db"))?),
            Backend::Postgres { url, holder } => Arc::new(PostgresStore::open(
                url,
                PostgresOptions {
                    holder: holder.clone(),
                    ..PostgresOptions::new(Duration::from_secs(10))
                },
            )?),
        })
    }

    /// Another process's handle on the same PostgreSQL database (its own lease holder).
    pub fn other_replica(&self, lease: Duration) -> PostgresStore {
        match self {
            Backend::Postgres { url, .. } => {
                PostgresStore::open(url, PostgresOptions::new(lease)).unwrap()
            }
            Backend::Embedded(_) => panic!("replicas share a PostgreSQL database only"),
        }
    }

    /// Changes the stored data behind the store's back: `sqlite` or `postgres` SQL.
    pub fn tamper(&self, sqlite: &str, postgres: &str) {
        match self {
            Backend::Embedded(dir) => {
                let conn = rusqlite::Connection::open(dir.path().join("ledger.db")).unwrap();
                conn.execute_batch(sqlite).unwrap();
            }
            Backend::Postgres { url, .. } => super::postgres::execute(url, postgres),
        }
    }
}
