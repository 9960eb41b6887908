//! pot-provenance
