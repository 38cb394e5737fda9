// adamw.cu — fused AdamW over the flat parameter buffer.
//
// Why: the optimizer touches every parameter once per step; one elementwise kernel reads the gradient,
// the f32 master weight and both f32 moments, and writes them back together with the bf16 working copy
// the matmuls use, instead of separate scale / moment / update / cast passes.
//
// g = grad·grad_scale; m = β1·m + (1−β1)·g; v = β2·v + (1−β2)·g²; u = (m·inv_bc1)/(√(v·inv_bc2) + ε)
// coupled (decay_mode 0):     p = p − lr·(u + λ·p)
// independent (decay_mode 1): p = p − lr·u − λ·p
// λ = weight_decay where decayed, else 0: per element from decay_mask_N (1 = decay) when it is non-null,
// otherwise decay_flag for the whole range (one launch per tensor or per contiguous run of tensors).
// inv_bc1 = 1/(1 − β1^t), inv_bc2 = 1/(1 − β2^t), computed by the host in f64 as the CPU reference does.
// params_bf16_N may be null (no working copy). Launch: block 256, any grid (grid-stride), no dynamic
// shared memory.
#include "common.cuh"

extern "C" __global__ void __launch_bounds__(256) adamw_f32(float* params_N, const float* grads_N, float* m_N, float* v_N,
                                     bf16* params_bf16_N, const unsigned char* decay_mask_N, int decay_flag,
                                     long long n, float lr, float beta1, float beta2, float eps,
                                     float weight_decay, int decay_mode, float grad_scale, float inv_bc1,
                                     float inv_bc2) {
  ISOFLOP_GRID_STRIDE(i, n) {
    const bool decay = decay_mask_N ? decay_mask_N[i] != 0 : decay_flag != 0;
    const float wd = decay ? weight_decay : 0.f;
    const float g = grads_N[i] * grad_scale;
    const float m = beta1 * m_N[i] + (1.f - beta1) * g;
    const float v = beta2 * v_N[i] + (1.f - beta2) * g * g;
    m_N[i] = m;
    v_N[i] = v;
    const float u = (m * inv_bc1) / (sqrtf(v * inv_bc2) + eps);
    float p = params_N[i];
    p = decay_mode == 0 ? p - lr * (u + wd * p) : p - lr * u - wd * p;
    params_N[i] = p;
    if (params_bf16_N) params_bf16_N[i] = isoflop::f2bf(p);
  }
}
