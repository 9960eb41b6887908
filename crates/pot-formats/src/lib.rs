//! pot-formats
