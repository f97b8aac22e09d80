//! tenure's decision core. No HTTP here: the front end (`tenure_acme`) asks,
//! the engine decides, signs and stores.

pub mod authority;
pub mod ca;
pub mod error;
pub mod hsm;
pub mod identifier;
pub mod lifecycle;
pub mod model;
pub mod policy;
pub mod registry;
pub mod sealing;
pub mod store;

pub use error::{Error, ErrorKind, Result};
pub use identifier::{Identifier, IdentifierKind};
