//! Shared by the modules of the device test binary: the emulator's build and launch harness, the devices
//! a test runs on, and the kernel cases with their CPU references.

pub mod attention_cases;
pub mod cases;
pub mod common;
pub mod harness;
