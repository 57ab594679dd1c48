//! The `future-2-0` fuser, built against `cascade:policy@1.3.0` (this crate's `wit` folder):
//! a newer minor contract than the host's, which must be refused.

include!("../../future-2-0/src/lib.rs");
