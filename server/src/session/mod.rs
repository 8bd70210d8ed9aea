//! A client's session, from accepted connection to teardown.

mod connection;

pub use connection::{Assigned, Connected, Identified, SessionError};
