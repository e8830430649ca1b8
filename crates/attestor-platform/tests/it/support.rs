//! The shared harness (swtpm, waiting).
#![allow(dead_code, unused_imports)]

pub use attestor_testkit::*;
