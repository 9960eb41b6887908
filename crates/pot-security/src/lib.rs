//! pot-security
