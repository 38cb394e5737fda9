// ptx_emu.h — CPU emulation of the PTX wrappers of kernels/ptx.cuh (included from there under ISOFLOP_EMU).
//
// Same signatures and semantics as the GPU versions; layouts as in the PTX ISA (see the table in ptx.cuh).
// mma.sync and ldmatrix are warp collectives through the emulator: every lane deposits its registers or
// row address, and once all 32 lanes have arrived one function computes every lane's result.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

namespace ptx {
namespace detail {

inline float bf16_lo(unsigned r) { return __uint_as_float(r << 16); }
inline float bf16_hi(unsigned r) { return __uint_as_float(r & 0xffff0000u); }

struct MmaIn {
  unsigned a[4];
  unsigned b[2];
  float c[4];
};
struct MmaOut {
  float d[4];
};

inline void mma_m16n8k16_fn(const void* const* in, void* const* out, unsigned present, void*) {
  if (present != 0xffffffffu) {
    char buf[96];
    snprintf(buf, sizeof buf, "mma.sync.m16n8k16 needs all 32 lanes, present %08x", present);
    ::emu::coll_error(buf);
    return;
  }
  float A[16][16], B[16][8], C[16][8];
  for (unsigned l = 0; l < 32; ++l) {
    const MmaIn& f = *static_cast<const MmaIn*>(in[l]);
    unsigned g = l >> 2, t = l & 3;
    A[g][2 * t] = bf16_lo(f.a[0]);
    A[g][2 * t + 1] = bf16_hi(f.a[0]);
    A[g + 8][2 * t] = bf16_lo(f.a[1]);
    A[g + 8][2 * t + 1] = bf16_hi(f.a[1]);
    A[g][2 * t + 8] = bf16_lo(f.a[2]);
    A[g][2 * t + 9] = bf16_hi(f.a[2]);
    A[g + 8][2 * t + 8] = bf16_lo(f.a[3]);
    A[g + 8][2 * t + 9] = bf16_hi(f.a[3]);
    B[2 * t][g] = bf16_lo(f.b[0]);
    B[2 * t + 1][g] = bf16_hi(f.b[0]);
    B[2 * t + 8][g] = bf16_lo(f.b[1]);
    B[2 * t + 9][g] = bf16_hi(f.b[1]);
    C[g][2 * t] = f.c[0];
    C[g][2 * t + 1] = f.c[1];
    C[g + 8][2 * t] = f.c[2];
    C[g + 8][2 * t + 1] = f.c[3];
  }
  float D[16][8];
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 8; ++j) {
      float acc = 0.f;  // bf16 x bf16 products are exact in f32
      for (int k = 0; k < 16; ++k) acc += A[i][k] * B[k][j];
      D[i][j] = acc + C[i][j];
    }
  for (unsigned l = 0; l < 32; ++l) {
    MmaOut& o = *static_cast<MmaOut*>(out[l]);
    unsigned g = l >> 2, t = l & 3;
    o.d[0] = D[g][2 * t];
    o.d[1] = D[g][2 * t + 1];
    o.d[2] = D[g + 8][2 * t];
    o.d[3] = D[g + 8][2 * t + 1];
  }
}

// ctx: (number of matrices) | (trans << 8)
inline void ldmatrix_fn(const void* const* in, void* const* out, unsigned present, void* ctx) {
  uintptr_t cfg = reinterpret_cast<uintptr_t>(ctx);
  unsigned nmat = unsigned(cfg & 0xff);
  bool trans = (cfg >> 8) & 1;
  if (present != 0xffffffffu) {
    char buf[96];
    snprintf(buf, sizeof buf, "ldmatrix needs all 32 lanes, present %08x", present);
    ::emu::coll_error(buf);
    return;
  }
  for (unsigned r = 0; r < 8 * nmat; ++r) {
    const void* p = *static_cast<const void* const*>(in[r]);
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) {
      char buf[128];
      snprintf(buf, sizeof buf, "ldmatrix row address of lane %u is not 16-byte aligned (%p)", r, p);
      ::emu::coll_error(buf);
      return;
    }
  }
  for (unsigned l = 0; l < 32; ++l) {
    unsigned* regs = static_cast<unsigned*>(out[l]);
    for (unsigned i = 0; i < nmat; ++i) {
      uint16_t lo, hi;
      if (!trans) {
        const uint16_t* row = *static_cast<const uint16_t* const*>(in[8 * i + l / 4]);
        lo = row[2 * (l % 4)];
        hi = row[2 * (l % 4) + 1];
      } else {
        const uint16_t* r0 = *static_cast<const uint16_t* const*>(in[8 * i + 2 * (l % 4)]);
        const uint16_t* r1 = *static_cast<const uint16_t* const*>(in[8 * i + 2 * (l % 4) + 1]);
        lo = r0[l / 4];
        hi = r1[l / 4];
      }
      regs[i] = unsigned(lo) | (unsigned(hi) << 16);
    }
  }
}

inline void ldmatrix(unsigned* regs, const void* smem_row, unsigned nmat, bool trans) {
  const void* p = smem_row;
  unsigned tmp[4] = {0, 0, 0, 0};
  ::emu::warp_collective(0xffffffffu, &ldmatrix_fn, &p, tmp,
                         reinterpret_cast<void*>(uintptr_t(nmat) | (uintptr_t(trans) << 8)));
  for (unsigned i = 0; i < nmat; ++i) regs[i] = tmp[i];
}

}  // namespace detail

inline void mma_m16n8k16_bf16(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2], const float (&c)[4]) {
  detail::MmaIn in;
  memcpy(in.a, a, sizeof in.a);
  memcpy(in.b, b, sizeof in.b);
  memcpy(in.c, c, sizeof in.c);
  detail::MmaOut o;
  ::emu::warp_collective(0xffffffffu, &detail::mma_m16n8k16_fn, &in, &o);
  memcpy(d, o.d, sizeof o.d);
}

inline void ldmatrix_x1(unsigned& r0, const void* smem_row) { detail::ldmatrix(&r0, smem_row, 1, false); }
inline void ldmatrix_x2(unsigned (&r)[2], const void* smem_row) { detail::ldmatrix(r, smem_row, 2, false); }
inline void ldmatrix_x4(unsigned (&r)[4], const void* smem_row) { detail::ldmatrix(r, smem_row, 4, false); }
inline void ldmatrix_x2_trans(unsigned (&r)[2], const void* smem_row) { detail::ldmatrix(r, smem_row, 2, true); }
inline void ldmatrix_x4_trans(unsigned (&r)[4], const void* smem_row) { detail::ldmatrix(r, smem_row, 4, true); }

// cp.async: queued per thread, performed when a wait covers its group (see emu::flush_async).
inline void cp_async_check_(void* dst, const void* src) {
  if (reinterpret_cast<uintptr_t>(dst) % 16 || reinterpret_cast<uintptr_t>(src) % 16) {
    char buf[128];
    snprintf(buf, sizeof buf, "cp.async 16-byte copy with unaligned address (dst %p, src %p)", dst, src);
    ::emu::fail(buf);
  }
}
inline void cp_async_16(void* smem_dst, const void* gmem_src) {
  cp_async_check_(smem_dst, gmem_src);
  ::emu::g_cur->async_copies.push_back({smem_dst, gmem_src, 16, 16});
}
inline void cp_async_16_zfill(void* smem_dst, const void* gmem_src, unsigned src_bytes) {
  if (src_bytes > 16) ::emu::fail("cp.async src-size above 16");
  if (src_bytes) cp_async_check_(smem_dst, gmem_src);
  ::emu::g_cur->async_copies.push_back({smem_dst, gmem_src, 16, src_bytes});
}
inline void cp_async_commit() {
  ::emu::Thread* t = ::emu::g_cur;
  t->async_groups.push_back(t->async_copies.size());
}
template <int N>
inline void cp_async_wait() {
  ::emu::flush_async(*::emu::g_cur, size_t(N));
}
inline void cp_async_wait_all() {
  ::emu::Thread* t = ::emu::g_cur;
  t->async_groups.push_back(t->async_copies.size());
  ::emu::flush_async(*t, 0);
}

inline float ex2_approx(float x) { return exp2f(x); }

}  // namespace ptx
