//! The tasks, one module per task or group of tasks: each holds its options and a function per
//! task, and nothing another task calls. What several tasks share lives one floor below
//! (`platform_build`, `publish`, `mirroring`, `vm`, …); no module here imports another.

pub mod bench;
pub mod buildx;
pub mod cloud;
pub mod images;
pub mod info;
pub mod local_registry;
pub mod publish_all;
pub mod scan;
pub mod seed;
pub mod thirdparty;
pub mod verify;
pub mod vm;
