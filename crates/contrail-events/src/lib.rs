//! Events, reference data and calendar arithmetic shared by every Contrail stage.
//!
//! - [`event`]: the flight-shopping event, its JSON-lines form, and [`event::parse_line`],
//!   the one validator that decides what enters the curated table.
//! - [`schema`]: the Arrow schema of the curated table and the builder from events.
//! - [`refdata`]: airports, carriers, currencies and great-circle distance.
//! - [`calendar`]: UTC dates and instants without a time-zone database.

pub mod calendar;
pub mod event;
pub mod refdata;
pub mod schema;

pub use event::{parse_line, Cabin, Channel, Event, Reject, RejectReason};
