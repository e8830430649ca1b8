//! The shared harness (PostgreSQL, waiting) and both store backends behind one handle.
#![allow(dead_code)]

pub mod stores;

pub use attestor_testkit::*;
