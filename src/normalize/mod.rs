//! Normalisation: Arrow batches of source rows become polars frames, the fact frame per window
//! and the four dimension frames at the end, with surrogate keys from [`registry::Registry`].

pub mod frames;
pub mod keymap;
pub mod registry;

pub use frames::{window_frame, DimFrames, Normalized, Normalizer};
pub use registry::Registry;
