//! Forward and backward of every op of the model contract, in f32, row-major.
//!
//! Convention: gradients with respect to inputs are *written* (`=`), gradients with respect to
//! parameters are *accumulated* (`+=`). Every op is deterministic: parallel work is split in chunks
//! whose size depends only on the shapes, never on the number of threads, and every reduction runs
//! in a fixed order.

pub mod adamw;
pub mod attention;
pub mod cross_entropy;
pub mod embedding;
mod exp;
pub mod gelu;
pub mod layernorm;
pub mod matmul;
pub mod norm;
pub mod qk_norm;
pub mod rope;
mod send_ptr;

pub use adamw::adamw_update;
pub use attention::{attention_backward, attention_forward};
pub use cross_entropy::{
    cross_entropy_forward_backward, cross_entropy_in_place, cross_entropy_loss, token_scores,
};
pub use embedding::{embedding_backward, embedding_forward};
pub use gelu::{gelu_backward, gelu_forward};
pub use layernorm::{layernorm_backward, layernorm_forward};
pub use matmul::{matmul_backward, matmul_forward, OutMode};
pub use norm::global_norm;
pub use qk_norm::{qk_norm_backward, qk_norm_forward};
pub use rope::{rope_backward, rope_cos_sin, rope_forward};
