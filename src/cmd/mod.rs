//! One module per subcommand; `common` holds the flags several commands share.
pub mod check;
pub mod common;
pub mod crops;
pub mod eval;
pub mod keys;
pub mod migrate;
pub mod models;
pub mod receipts;
pub mod report;
pub mod resubmission;
pub mod serve;
