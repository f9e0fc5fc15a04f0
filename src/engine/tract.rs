//! tract engine
