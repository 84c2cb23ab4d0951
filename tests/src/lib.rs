//! Interop harness.
