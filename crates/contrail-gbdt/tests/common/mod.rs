//! Helpers shared by the test files.

/// A small deterministic generator for test data (the conformance suite's).
pub use contrail_gbdt::conformance::Lcg;
