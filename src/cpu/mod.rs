//! The CPU reference backend (f32): forward and backward of every op of the model contract.
