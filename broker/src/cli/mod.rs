//! The subcommands other than `serve`, each in its own module. They return
//! typed results; `main.rs` turns them into exit codes.
//!
//! - [`admin`]: requests to a running broker's HTTP endpoint (`replay`).
//! - [`backup`]: backups of a running or stopped broker, and restores.
//! - [`convert`]: HL7 v2 files to FHIR Bundles.
//! - [`send`]: send HL7 files over MLLP and summarise the ACKs.
//! - [`dump`]: print a stopped broker's topic as JSON lines.
//! - [`topics`]: list a stopped broker's topics.
//! - [`remote`]: `tail`, `publish` and `topics --server` over the binary protocol.
//! - [`split`]: cut files into HL7 messages (framed or not, any separator).

pub mod admin;
pub mod backup;
pub mod convert;
pub mod dump;
pub mod remote;
pub mod send;
pub mod split;
pub mod topics;
