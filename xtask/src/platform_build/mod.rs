//! Builds: which engine builds which platform (`node`), its builder made ready (`setup`), one
//! platform's build command (`command`), which failures pass (`failure`), and what a build's
//! output says (`steps`, `output`).

pub mod command;
pub mod failure;
pub mod node;
pub mod output;
pub mod setup;
pub mod steps;
