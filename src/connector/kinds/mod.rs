//! The one explicit list of connector kinds. Adding a kind means adding its module here and its spec to
//! `KINDS`; an unknown kind in a connector file is answered with the names in this list.

use super::KindSpec;

/// Every kind healthsync can build, sources first.
pub static KINDS: &[&KindSpec] = &[];
