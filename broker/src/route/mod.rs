//! Routing: one [`Router`] actor per configured route reads its source
//! topics through durable cursors, keeps what matches the route's condition,
//! transforms it, and writes the outputs together with the cursor advance in
//! one atomic storage step — so a crash never loses or duplicates an output.
//!
//! # Layout
//! - [`router`]: the actor and its read–transform–write loop.
//! - [`transform`]: what a route does to one record (`none`, `fhir`,
//!   `fhir-resources`) and how target templates are filled in.
//! - [`workers`]: the threads a backlog is converted on in parallel.

pub mod router;
pub mod transform;
pub mod workers;

pub use router::{Router, RouterHandle};
pub use workers::Workers;
