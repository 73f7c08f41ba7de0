//! Placeholder: this crate's content lands with a later issue. It exports nothing yet.
