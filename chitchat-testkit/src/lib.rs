//! (in progress: the in-memory network is being written)
#![deny(missing_docs)]

pub mod conformance;
