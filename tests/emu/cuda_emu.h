// cuda_emu.h — the CUDA execution model on the CPU, so that kernels/*.cu compile with g++ and run in tests.
//
// Why: the CUDA kernels must be testable on machines without a GPU (CI has none). This header is
// force-included (`g++ -include cuda_emu.h -DISOFLOP_EMU`) before a kernel source. It provides:
//   * a grid of blocks run one after another on the calling host thread;
//   * the threads of a block as fibers (hand-rolled x86-64 context switch, ucontext elsewhere) that run
//     until they block: `__syncthreads()` is a real barrier, warp primitives are lock-step exchanges;
//   * per-block `__shared__` memory (static: function-local `static` storage, reused by every block, since
//     blocks never overlap; dynamic: ISOFLOP_DYN_SMEM from kernels/common.cuh, a fresh heap buffer per block,
//     filled with 0xFF bytes (NaN for f32 and bf16) so that reads of unwritten shared memory show up);
//   * threadIdx / blockIdx / blockDim / gridDim, warp shuffles / votes / reductions, atomics, math intrinsics;
//   * bf16 from the CUDA runtime wheel's own cuda_bf16.h (host implementations, round-to-nearest-even).
// Launch: `emu::launch(kernel, grid, block, shmem, void** args)`; ISOFLOP_EMU_EXPORT(name) defines the
// `extern "C" int isoflop_emu_launch_<name>(grid.., block.., shmem, void** args)` entry point the Rust
// harness (tests/emu/harness.rs) calls. A failed launch (deadlock, divergent collectives, __trap) returns
// non-zero; `isoflop_emu_last_error()` tells why.
//
// Scheduling order of the fibers (forward, reverse, or a seeded shuffle) is set per launch with
// `isoflop_emu_set_schedule`: a kernel that is right only in one order has a race.
#pragma once
#ifndef ISOFLOP_EMU
#define ISOFLOP_EMU 1
#endif

#include <algorithm>
#include <atomic>
#include <cassert>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <sys/mman.h>
#include <unistd.h>

#include <cuda_bf16.h>  // host build of the CUDA bf16 type (defines dim3, uint3, float4, ... too)

#if defined(__SANITIZE_ADDRESS__)
#define ISOFLOP_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ISOFLOP_EMU_ASAN 1
#endif
#endif
#ifdef ISOFLOP_EMU_ASAN
#include <sanitizer/common_interface_defs.h>
#endif
#if !defined(__x86_64__)
#include <ucontext.h>
#endif

// ---------------------------------------------------------------------------------------------------------
// Qualifiers
#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __noinline__
#undef __align__
#undef __shared__
#undef __constant__
#undef __launch_bounds__
#undef __restrict__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __align__(n) __attribute__((aligned(n)))
// Blocks never run at the same time (one launch at a time per process: see emu::launch_mutex), so one
// static copy per kernel-local `__shared__` variable is per-block shared memory. Plain statics (not
// thread_local) so AddressSanitizer puts redzones around them.
#define __shared__ static
#define __constant__ static
#define __launch_bounds__(...)
#define __restrict__ __restrict
#define __grid_constant__

#ifndef warpSize
#define warpSize 32
#endif

namespace emu {

// ---------------------------------------------------------------------------------------------------------
// Fibers
#if defined(__x86_64__)
extern "C" void isoflop_emu_switch(void** save_sp, void* new_sp);
extern "C" void isoflop_emu_trampoline();
// Saves the callee-saved registers, MXCSR and the x87 control word on the current stack, stores the stack
// pointer in *save_sp, loads new_sp and restores the same from there. Weak so that several translation
// units may include this header.
asm(R"(
    .text
    .weak isoflop_emu_switch
    .hidden isoflop_emu_switch
    .type isoflop_emu_switch,@function
isoflop_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size isoflop_emu_switch, .-isoflop_emu_switch

    .weak isoflop_emu_trampoline
    .hidden isoflop_emu_trampoline
    .type isoflop_emu_trampoline,@function
isoflop_emu_trampoline:
    andq $-16, %rsp
    movq %r12, %rdi
    callq *%r13
    ud2
    .size isoflop_emu_trampoline, .-isoflop_emu_trampoline
)");
#endif

enum class State : int { Runnable, WaitBlock, WaitWarp, Done };

// A warp collective: called once per group when every live lane of `mask` has arrived, with each lane's
// input and output pointers (nullptr for lanes not in the group).
using WarpFn = void (*)(const void* const* in, void* const* out, unsigned present, void* ctx);

struct AsyncCopy {
  void* dst;
  const void* src;
  unsigned bytes;      // bytes to write at dst
  unsigned src_bytes;  // bytes read from src (the rest zero-filled)
};

struct Thread {
  void* sp = nullptr;
  char* stack = nullptr;  // usable stack (above the guard page)
  size_t stack_size = 0;
  void* fake_stack = nullptr;
#if !defined(__x86_64__)
  ucontext_t uc;
#endif
  uint3 tid;
  unsigned linear = 0, lane = 0, warp = 0;
  State state = State::Done;
  // warp collective in progress
  unsigned wmask = 0;
  WarpFn wfn = nullptr;
  const void* win = nullptr;
  void* wout = nullptr;
  void* wctx = nullptr;
  // block barrier
  int bar_pred = 0;
  // cp.async: copies issued, group boundaries (number of copies at each commit)
  std::vector<AsyncCopy> async_copies;
  std::vector<size_t> async_groups;
};

struct Sched;
inline thread_local Thread* g_cur = nullptr;
inline thread_local Sched* g_sched = nullptr;

struct LaunchError {
  std::string msg;
};

struct Sched {
  dim3 grid_dim, block_dim;
  uint3 block_idx;
  size_t dyn_smem_bytes = 0;
  unsigned char* dyn_smem = nullptr;
  std::vector<Thread> threads;
  std::vector<unsigned> order;  // scheduling order of thread indices
  unsigned nthreads = 0;
  void* sched_sp = nullptr;
#if !defined(__x86_64__)
  ucontext_t sched_uc;
#endif
  void* sched_fake_stack = nullptr;
  const void* sched_stack_bottom = nullptr;
  size_t sched_stack_size = 0;
  void (*body)(void*) = nullptr;
  void* body_ctx = nullptr;
  int bar_count = 0, bar_result = 0;
  std::string error;
};

// Fiber stacks of the host thread, kept across launches (mmap'd lazily, with a guard page below each).
struct StackPool {
  std::vector<char*> bases;
  size_t size = 0;
  ~StackPool() {
    for (char* b : bases) munmap(b, size + 4096);
  }
  char* get(size_t i, size_t want) {
    if (size == 0) size = want;
    while (bases.size() <= i) {
      void* p = mmap(nullptr, size + 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (p == MAP_FAILED) {
        fprintf(stderr, "cuda_emu: mmap of a fiber stack failed\n");
        abort();
      }
      mprotect(p, 4096, PROT_NONE);  // guard page: stack overflow faults instead of corrupting memory
      bases.push_back(static_cast<char*>(p));
    }
    return bases[i] + 4096;
  }
};
inline thread_local StackPool g_stacks;

inline size_t fiber_stack_bytes() {
#ifdef ISOFLOP_EMU_ASAN
  return size_t(1) << 20;
#else
  return size_t(256) << 10;
#endif
}

inline void switch_to_sched(bool exiting) {
  Sched* s = g_sched;
  Thread* t = g_cur;
#ifdef ISOFLOP_EMU_ASAN
  __sanitizer_start_switch_fiber(exiting ? nullptr : &t->fake_stack, s->sched_stack_bottom, s->sched_stack_size);
#else
  (void)exiting;
#endif
#if defined(__x86_64__)
  isoflop_emu_switch(&t->sp, s->sched_sp);
#else
  swapcontext(&t->uc, &s->sched_uc);
#endif
#ifdef ISOFLOP_EMU_ASAN
  __sanitizer_finish_switch_fiber(t->fake_stack, nullptr, nullptr);
#endif
}

inline void fiber_main(void* arg) {
  Thread* t = static_cast<Thread*>(arg);
  Sched* s = g_sched;
#ifdef ISOFLOP_EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &s->sched_stack_bottom, &s->sched_stack_size);
#endif
  (void)t;
  s->body(s->body_ctx);
  g_cur->state = State::Done;
  switch_to_sched(true);
  __builtin_trap();  // never resumed
}

#if !defined(__x86_64__)
inline void fiber_main_uc(unsigned lo, unsigned hi) {
  fiber_main(reinterpret_cast<void*>((uintptr_t(hi) << 32) | uintptr_t(lo)));
}
#endif

inline void fiber_init(Thread& t) {
#if defined(__x86_64__)
  uintptr_t top = (reinterpret_cast<uintptr_t>(t.stack) + t.stack_size) & ~uintptr_t(15);
  uint64_t* sp = reinterpret_cast<uint64_t*>(top);
  *--sp = 0;  // padding
  *--sp = reinterpret_cast<uint64_t>(&isoflop_emu_trampoline);  // return address of the first switch
  *--sp = 0;                                                     // rbp
  *--sp = 0;                                                     // rbx
  *--sp = reinterpret_cast<uint64_t>(&t);                        // r12: argument
  *--sp = reinterpret_cast<uint64_t>(&fiber_main);               // r13: entry
  *--sp = 0;                                                     // r14
  *--sp = 0;                                                     // r15
  uint32_t mxcsr = 0x1F80;                                       // default: all masked, round to nearest
  uint16_t fpucw = 0x037F;
  uint64_t ctl = uint64_t(mxcsr) | (uint64_t(fpucw) << 32);
  *--sp = ctl;
  t.sp = sp;
#else
  getcontext(&t.uc);
  t.uc.uc_stack.ss_sp = t.stack;
  t.uc.uc_stack.ss_size = t.stack_size;
  t.uc.uc_link = nullptr;
  uintptr_t p = reinterpret_cast<uintptr_t>(&t);
  makecontext(&t.uc, (void (*)())fiber_main_uc, 2, unsigned(p & 0xffffffffu), unsigned(p >> 32));
#endif
}

inline void resume(Sched& s, Thread& t) {
  g_cur = &t;
#ifdef ISOFLOP_EMU_ASAN
  __sanitizer_start_switch_fiber(&s.sched_fake_stack, t.stack, t.stack_size);
#endif
#if defined(__x86_64__)
  isoflop_emu_switch(&s.sched_sp, t.sp);
#else
  swapcontext(&s.sched_uc, &t.uc);
#endif
#ifdef ISOFLOP_EMU_ASAN
  __sanitizer_finish_switch_fiber(s.sched_fake_stack, nullptr, nullptr);
#endif
  g_cur = nullptr;
}

// Blocks the calling fiber until the scheduler releases it.
inline void block_on(State st) {
  g_cur->state = st;
  switch_to_sched(false);
}

[[noreturn]] inline void fail(const std::string& msg) {
  // Record the first error, then park this fiber for good: the scheduler sees it as never runnable again.
  Sched* s = g_sched;
  if (s->error.empty()) s->error = msg;
  g_cur->state = State::Done;
  switch_to_sched(true);
  __builtin_trap();
}

// Try to release waiting warps and the block barrier. Returns true if some thread became runnable.
inline bool release(Sched& s) {
  bool any = false;
  const unsigned nwarps = (s.nthreads + 31) / 32;
  for (unsigned w = 0; w < nwarps; ++w) {
    // Repeatedly look for a complete group among this warp's waiting lanes.
    for (;;) {
      unsigned base = w * 32;
      unsigned nl = std::min(32u, s.nthreads - base);
      int first = -1;
      for (unsigned l = 0; l < nl; ++l)
        if (s.threads[base + l].state == State::WaitWarp) {
          first = int(l);
          break;
        }
      if (first < 0) break;
      Thread& f = s.threads[base + unsigned(first)];
      unsigned mask = f.wmask;
      bool complete = true;
      unsigned present = 0;
      for (unsigned l = 0; l < nl; ++l) {
        if (!(mask >> l & 1u)) continue;
        Thread& t = s.threads[base + l];
        if (t.state == State::Done) continue;
        if (t.state != State::WaitWarp) {
          complete = false;
          break;
        }
        if (t.wmask != mask || t.wfn != f.wfn) {
          complete = false;
          break;
        }
        present |= 1u << l;
      }
      if (!complete) break;
      const void* in[32] = {};
      void* out[32] = {};
      for (unsigned l = 0; l < 32; ++l)
        if (present >> l & 1u) {
          in[l] = s.threads[base + l].win;
          out[l] = s.threads[base + l].wout;
        }
      f.wfn(in, out, present, f.wctx);
      for (unsigned l = 0; l < 32; ++l)
        if (present >> l & 1u) s.threads[base + l].state = State::Runnable;
      any = true;
    }
  }
  if (any) return true;
  // Block barrier: every live thread waiting at it (exited threads count as arrived, as on the hardware).
  bool all = true, some = false;
  for (unsigned i = 0; i < s.nthreads; ++i) {
    State st = s.threads[i].state;
    if (st == State::Done) continue;
    if (st != State::WaitBlock) {
      all = false;
      break;
    }
    some = true;
  }
  if (all && some) {
    s.bar_result = s.bar_count;
    s.bar_count = 0;
    for (unsigned i = 0; i < s.nthreads; ++i)
      if (s.threads[i].state == State::WaitBlock) s.threads[i].state = State::Runnable;
    return true;
  }
  return false;
}

inline std::string describe_deadlock(Sched& s) {
  std::string m = "deadlock in block (" + std::to_string(s.block_idx.x) + "," + std::to_string(s.block_idx.y) + "," +
                  std::to_string(s.block_idx.z) + "): ";
  unsigned nb = 0, nw = 0, nd = 0;
  for (unsigned i = 0; i < s.nthreads; ++i) {
    switch (s.threads[i].state) {
      case State::WaitBlock: ++nb; break;
      case State::WaitWarp: ++nw; break;
      default: ++nd;
    }
  }
  m += std::to_string(nb) + " threads at __syncthreads, " + std::to_string(nw) + " at warp collectives, " +
       std::to_string(nd) + " exited";
  for (unsigned i = 0; i < s.nthreads; ++i)
    if (s.threads[i].state == State::WaitWarp) {
      char buf[160];
      snprintf(buf, sizeof buf, "; e.g. thread %u waits at a warp collective with mask %08x", i, s.threads[i].wmask);
      m += buf;
      break;
    }
  m += " (divergent barrier, mismatched warp masks, or different collectives in one warp)";
  return m;
}

struct ScheduleCfg {
  int mode = 0;  // 0 forward, 1 reverse, 2 seeded shuffle
  uint64_t seed = 0;
};
// Per host thread: a test sets the order for its own launches only.
inline ScheduleCfg& schedule_cfg() {
  static thread_local ScheduleCfg c;
  return c;
}
inline std::mutex& launch_mutex() {
  static std::mutex m;
  return m;
}
inline std::string& last_error() {
  static std::string e;
  return e;
}

inline void flush_async(Thread& t, size_t keep_groups);

// Report an error from inside a warp collective's function (runs on the scheduler, not in a fiber).
inline void coll_error(const std::string& msg) {
  if (g_sched->error.empty()) g_sched->error = msg;
}

// Run one block to completion. Returns false (with s.error set) on failure.
inline bool run_block(Sched& s) {
  for (unsigned i = 0; i < s.nthreads; ++i) {
    Thread& t = s.threads[i];
    t.state = State::Runnable;
    t.async_copies.clear();
    t.async_groups.clear();
    fiber_init(t);
  }
  if (s.dyn_smem_bytes) memset(s.dyn_smem, 0xFF, s.dyn_smem_bytes);
  s.bar_count = 0;
  for (;;) {
    bool ran = false;
    for (unsigned k = 0; k < s.nthreads; ++k) {
      Thread& t = s.threads[s.order[k]];
      if (t.state != State::Runnable) continue;
      resume(s, t);
      ran = true;
      if (!s.error.empty()) return false;
    }
    bool live = false;
    for (unsigned i = 0; i < s.nthreads; ++i)
      if (s.threads[i].state != State::Done) {
        live = true;
        break;
      }
    if (!live) return true;
    if (release(s)) {
      if (!s.error.empty()) return false;
      continue;
    }
    if (!ran) {
      s.error = describe_deadlock(s);
      return false;
    }
    s.error = describe_deadlock(s);
    return false;
  }
}

inline void make_order(Sched& s) {
  s.order.resize(s.nthreads);
  for (unsigned i = 0; i < s.nthreads; ++i) s.order[i] = i;
  const ScheduleCfg& c = schedule_cfg();
  if (c.mode == 1) {
    std::reverse(s.order.begin(), s.order.end());
  } else if (c.mode == 2) {
    uint64_t x = c.seed * 0x9E3779B97F4A7C15ull + 1;
    for (unsigned i = s.nthreads; i > 1; --i) {
      x ^= x >> 12;
      x ^= x << 25;
      x ^= x >> 27;
      unsigned j = unsigned((x * 0x2545F4914F6CDD1Dull) >> 33) % i;
      std::swap(s.order[i - 1], s.order[j]);
    }
  }
}

// Run body(ctx) as a kernel over grid x block. Returns 0 on success.
inline int launch_raw(dim3 grid, dim3 block, size_t shmem, void (*body)(void*), void* ctx) {
  std::lock_guard<std::mutex> lock(launch_mutex());
  last_error().clear();
  unsigned long long nthreads = (unsigned long long)block.x * block.y * block.z;
  if (nthreads == 0 || nthreads > 1024 || block.z > 64) {
    last_error() = "invalid block size " + std::to_string(block.x) + "x" + std::to_string(block.y) + "x" +
                   std::to_string(block.z) + " (1..1024 threads, z <= 64)";
    return 1;
  }
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 || grid.z > 65535) {
    last_error() = "invalid grid size " + std::to_string(grid.x) + "x" + std::to_string(grid.y) + "x" +
                   std::to_string(grid.z);
    return 1;
  }
  if (shmem > 227 * 1024) {
    last_error() = "dynamic shared memory " + std::to_string(shmem) + " bytes exceeds the 227 KiB of sm_90";
    return 1;
  }
  Sched s;
  s.grid_dim = grid;
  s.block_dim = block;
  s.nthreads = unsigned(nthreads);
  s.body = body;
  s.body_ctx = ctx;
  s.dyn_smem_bytes = shmem;
  s.dyn_smem = shmem ? static_cast<unsigned char*>(aligned_alloc(128, (shmem + 127) / 128 * 128)) : nullptr;
  // exact-size view for ASan: allocate exactly shmem bytes when sanitizing
#ifdef ISOFLOP_EMU_ASAN
  if (shmem) {
    free(s.dyn_smem);
    s.dyn_smem = static_cast<unsigned char*>(malloc(shmem));
  }
#endif
  s.threads.resize(s.nthreads);
  for (unsigned i = 0; i < s.nthreads; ++i) {
    Thread& t = s.threads[i];
    t.linear = i;
    t.tid = make_uint3(i % block.x, (i / block.x) % block.y, i / (block.x * block.y));
    t.lane = i % 32;
    t.warp = i / 32;
    t.stack_size = fiber_stack_bytes();
    t.stack = g_stacks.get(i, t.stack_size);
    t.stack_size = g_stacks.size;
  }
  make_order(s);
  Sched* prev = g_sched;
  g_sched = &s;
  int rc = 0;
  for (unsigned bz = 0; bz < grid.z && rc == 0; ++bz)
    for (unsigned by = 0; by < grid.y && rc == 0; ++by)
      for (unsigned bx = 0; bx < grid.x && rc == 0; ++bx) {
        s.block_idx = make_uint3(bx, by, bz);
        if (!run_block(s)) {
          last_error() = s.error;
          rc = 2;
        }
      }
  g_sched = prev;
  free(s.dyn_smem);
  return rc;
}

template <class... A>
struct Invoker {
  void (*kernel)(A...);
  std::tuple<std::decay_t<A>...> args;
  static void run(void* p) {
    Invoker* self = static_cast<Invoker*>(p);
    std::apply(self->kernel, self->args);
  }
};

template <class... A, size_t... I>
Invoker<A...> make_invoker(void (*k)(A...), void** args, std::index_sequence<I...>) {
  return Invoker<A...>{k, std::tuple<std::decay_t<A>...>(*static_cast<std::decay_t<A>*>(args[I])...)};
}

// "s0,s1,..": the sizes of the kernel's parameters, checked by the harness against the arguments given.
template <class... A>
const char* param_sizes(void (*)(A...)) {
  static const std::string s = [] {
    std::string r;
    ((r += (r.empty() ? "" : ",") + std::to_string(sizeof(std::decay_t<A>))), ...);
    return r;
  }();
  return s.c_str();
}

// Launch `kernel` like cuLaunchKernel: args[i] points to the i-th argument's value.
template <class... A>
int launch(void (*kernel)(A...), dim3 grid, dim3 block, size_t shmem, void** args) {
  auto inv = make_invoker(kernel, args, std::index_sequence_for<A...>{});
  return launch_raw(grid, block, shmem, &Invoker<A...>::run, &inv);
}

// ---------------------------------------------------------------------------------------------------------
// Warp collectives
inline void warp_collective(unsigned mask, WarpFn fn, const void* in, void* out, void* ctx = nullptr) {
  Thread* t = g_cur;
  if (!(mask >> t->lane & 1u)) {
    char buf[128];
    snprintf(buf, sizeof buf, "thread %u calls a warp collective with mask %08x that excludes its own lane %u",
             t->linear, mask, t->lane);
    fail(buf);
  }
  t->wmask = mask;
  t->wfn = fn;
  t->win = in;
  t->wout = out;
  t->wctx = ctx;
  block_on(State::WaitWarp);
}

inline unsigned lane_id() { return g_cur->lane; }

template <class T>
struct ShflIn {
  T v;
  int src;  // absolute source lane, or -1 to keep own value
};

template <class T>
void shfl_fn(const void* const* in, void* const* out, unsigned present, void*) {
  for (unsigned l = 0; l < 32; ++l) {
    if (!(present >> l & 1u)) continue;
    const ShflIn<T>* mine = static_cast<const ShflIn<T>*>(in[l]);
    int src = mine->src < 0 ? int(l) : mine->src;
    if (!(present >> src & 1u)) {
      // Reading an inactive lane is undefined on the GPU; make it an error here.
      char buf[128];
      snprintf(buf, sizeof buf, "lane %u shuffles from inactive lane %d (lanes present %08x)", l, src, present);
      coll_error(buf);
      return;
    }
    *static_cast<T*>(out[l]) = static_cast<const ShflIn<T>*>(in[src])->v;
  }
}

template <class T>
T shfl_generic(unsigned mask, T v, int src) {
  ShflIn<T> in{v, src};
  T out{};
  warp_collective(mask, &shfl_fn<T>, &in, &out);
  return out;
}

struct VoteIn {
  int pred;
};
inline void ballot_fn(const void* const* in, void* const* out, unsigned present, void*) {
  unsigned b = 0;
  for (unsigned l = 0; l < 32; ++l)
    if ((present >> l & 1u) && static_cast<const VoteIn*>(in[l])->pred) b |= 1u << l;
  for (unsigned l = 0; l < 32; ++l)
    if (present >> l & 1u) *static_cast<unsigned*>(out[l]) = b;
}
inline void nop_fn(const void* const*, void* const*, unsigned, void*) {}

template <class T, int Op>
void reduce_fn(const void* const* in, void* const* out, unsigned present, void*) {
  bool first = true;
  T acc{};
  for (unsigned l = 0; l < 32; ++l) {
    if (!(present >> l & 1u)) continue;
    T v = *static_cast<const T*>(in[l]);
    if (first) {
      acc = v;
      first = false;
    } else if (Op == 0) {
      acc = T(acc + v);
    } else if (Op == 1) {
      acc = v < acc ? v : acc;
    } else if (Op == 2) {
      acc = v > acc ? v : acc;
    } else if (Op == 3) {
      acc = acc & v;
    } else if (Op == 4) {
      acc = acc | v;
    } else {
      acc = acc ^ v;
    }
  }
  for (unsigned l = 0; l < 32; ++l)
    if (present >> l & 1u) *static_cast<T*>(out[l]) = acc;
}

template <class T, int Op>
T warp_reduce(unsigned mask, T v) {
  T out{};
  warp_collective(mask, &reduce_fn<T, Op>, &v, &out);
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// cp.async (deferred: the copy happens at the wait that covers its group, as late as the hardware may do it)
inline void do_copy(const AsyncCopy& c) {
  unsigned n = std::min(c.src_bytes, c.bytes);
  if (n) memcpy(c.dst, c.src, n);
  if (c.bytes > n) memset(static_cast<char*>(c.dst) + n, 0, c.bytes - n);
}
// Complete every committed group except the newest `keep_groups`; uncommitted copies are completed too
// only when keep_groups == 0 and everything is flushed (cp.async.wait_all).
inline void flush_async(Thread& t, size_t keep_groups) {
  size_t ng = t.async_groups.size();
  if (ng <= keep_groups) return;
  size_t upto = t.async_groups[ng - keep_groups - 1];
  for (size_t i = 0; i < upto; ++i) do_copy(t.async_copies[i]);
  t.async_copies.erase(t.async_copies.begin(), t.async_copies.begin() + long(upto));
  t.async_groups.erase(t.async_groups.begin(), t.async_groups.begin() + long(ng - keep_groups));
  for (auto& g : t.async_groups) g -= upto;
}

}  // namespace emu

// ---------------------------------------------------------------------------------------------------------
// Built-in variables
#define threadIdx (::emu::g_cur->tid)
#define blockIdx (::emu::g_sched->block_idx)
#define blockDim (::emu::g_sched->block_dim)
#define gridDim (::emu::g_sched->grid_dim)

// ---------------------------------------------------------------------------------------------------------
// Synchronisation
inline void __syncthreads() { ::emu::block_on(::emu::State::WaitBlock); }
inline int __syncthreads_count(int pred) {
  ::emu::g_sched->bar_count += pred ? 1 : 0;
  ::emu::block_on(::emu::State::WaitBlock);
  return ::emu::g_sched->bar_result;
}
inline int __syncthreads_or(int pred) { return __syncthreads_count(pred) != 0; }
inline int __syncthreads_and(int pred) {
  // count of threads with a false predicate
  ::emu::g_sched->bar_count += pred ? 0 : 1;
  ::emu::block_on(::emu::State::WaitBlock);
  return ::emu::g_sched->bar_result == 0;
}
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  ::emu::warp_collective(mask, &::emu::nop_fn, nullptr, nullptr);
}
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }
[[noreturn]] inline void __trap() { ::emu::fail("__trap() called"); }
inline unsigned __activemask() {
  ::emu::Sched* s = ::emu::g_sched;
  unsigned base = ::emu::g_cur->warp * 32, m = 0;
  for (unsigned l = 0; l < 32 && base + l < s->nthreads; ++l)
    if (s->threads[base + l].state != ::emu::State::Done) m |= 1u << l;
  return m;
}

// ---------------------------------------------------------------------------------------------------------
// Warp shuffles, votes, reductions
template <class T>
inline T __shfl_sync(unsigned mask, T var, int srcLane, int width = 32) {
  unsigned lane = ::emu::lane_id();
  int base = int(lane) & ~(width - 1);
  return ::emu::shfl_generic(mask, var, base + (srcLane & (width - 1)));
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32) {
  int lane = int(::emu::lane_id());
  int base = lane & ~(width - 1);
  int src = lane - int(delta);
  return ::emu::shfl_generic(mask, var, src < base ? -1 : src);
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32) {
  int lane = int(::emu::lane_id());
  int base = lane & ~(width - 1);
  int src = lane + int(delta);
  return ::emu::shfl_generic(mask, var, src >= base + width ? -1 : src);
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T var, int laneMask, int width = 32) {
  int lane = int(::emu::lane_id());
  int base = lane & ~(width - 1);
  int src = lane ^ laneMask;
  return ::emu::shfl_generic(mask, var, src >= base + width ? -1 : src);
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
  ::emu::VoteIn in{pred != 0};
  unsigned out = 0;
  ::emu::warp_collective(mask, &::emu::ballot_fn, &in, &out);
  return out;
}
inline int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }
inline int __all_sync(unsigned mask, int pred) { return (__ballot_sync(mask, !pred) & mask) == 0; }
inline unsigned __reduce_add_sync(unsigned mask, unsigned v) { return ::emu::warp_reduce<unsigned, 0>(mask, v); }
inline int __reduce_add_sync(unsigned mask, int v) {
  return int(::emu::warp_reduce<unsigned, 0>(mask, unsigned(v)));
}
inline unsigned __reduce_min_sync(unsigned mask, unsigned v) { return ::emu::warp_reduce<unsigned, 1>(mask, v); }
inline int __reduce_min_sync(unsigned mask, int v) { return ::emu::warp_reduce<int, 1>(mask, v); }
inline unsigned __reduce_max_sync(unsigned mask, unsigned v) { return ::emu::warp_reduce<unsigned, 2>(mask, v); }
inline int __reduce_max_sync(unsigned mask, int v) { return ::emu::warp_reduce<int, 2>(mask, v); }
inline unsigned __reduce_and_sync(unsigned mask, unsigned v) { return ::emu::warp_reduce<unsigned, 3>(mask, v); }
inline unsigned __reduce_or_sync(unsigned mask, unsigned v) { return ::emu::warp_reduce<unsigned, 4>(mask, v); }
inline unsigned __reduce_xor_sync(unsigned mask, unsigned v) { return ::emu::warp_reduce<unsigned, 5>(mask, v); }

// ---------------------------------------------------------------------------------------------------------
// Atomics (fibers are cooperative and launches are serialised, but use real atomics anyway)
template <class T>
inline T emu_atomic_add_(T* p, T v) {
  return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}
template <class T>
inline T emu_atomic_fp_add_(T* p, T v) {
  T old = *p;
  *p = old + v;
  return old;
}
inline int atomicAdd(int* p, int v) { return emu_atomic_add_(p, v); }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return emu_atomic_add_(p, v); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) { return emu_atomic_add_(p, v); }
inline float atomicAdd(float* p, float v) { return emu_atomic_fp_add_(p, v); }
inline double atomicAdd(double* p, double v) { return emu_atomic_fp_add_(p, v); }
inline int atomicSub(int* p, int v) { return __atomic_fetch_sub(p, v, __ATOMIC_RELAXED); }
inline unsigned atomicSub(unsigned* p, unsigned v) { return __atomic_fetch_sub(p, v, __ATOMIC_RELAXED); }
inline int atomicExch(int* p, int v) { return __atomic_exchange_n(p, v, __ATOMIC_RELAXED); }
inline unsigned atomicExch(unsigned* p, unsigned v) { return __atomic_exchange_n(p, v, __ATOMIC_RELAXED); }
inline float atomicExch(float* p, float v) {
  float o = *p;
  *p = v;
  return o;
}
template <class T>
inline T emu_atomic_max_(T* p, T v) {
  T o = *p;
  if (v > o) *p = v;
  return o;
}
template <class T>
inline T emu_atomic_min_(T* p, T v) {
  T o = *p;
  if (v < o) *p = v;
  return o;
}
inline int atomicMax(int* p, int v) { return emu_atomic_max_(p, v); }
inline unsigned atomicMax(unsigned* p, unsigned v) { return emu_atomic_max_(p, v); }
inline int atomicMin(int* p, int v) { return emu_atomic_min_(p, v); }
inline unsigned atomicMin(unsigned* p, unsigned v) { return emu_atomic_min_(p, v); }
inline int atomicCAS(int* p, int cmp, int v) {
  __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
  return cmp;
}
inline unsigned atomicCAS(unsigned* p, unsigned cmp, unsigned v) {
  __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
  return cmp;
}
inline unsigned long long atomicCAS(unsigned long long* p, unsigned long long cmp, unsigned long long v) {
  __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
  return cmp;
}
inline unsigned atomicInc(unsigned* p, unsigned lim) {
  unsigned o = *p;
  *p = o >= lim ? 0 : o + 1;
  return o;
}

// ---------------------------------------------------------------------------------------------------------
// Math intrinsics (host libm; the fast GPU versions differ in the last bits, so tolerances must allow that)
inline float __expf(float x) { return expf(x); }
inline float __exp10f(float x) { return powf(10.0f, x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanf(float x) { return tanf(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float rcp_f32_(float x) { return 1.0f / x; }
inline void sincosf_(float x, float* s, float* c) {
  *s = sinf(x);
  *c = cosf(x);
}
inline void __sincosf(float x, float* s, float* c) { sincosf_(x, s, c); }
inline float __int_as_float(int x) {
  float f;
  memcpy(&f, &x, 4);
  return f;
}
inline int __float_as_int(float x) {
  int i;
  memcpy(&i, &x, 4);
  return i;
}
inline float __uint_as_float(unsigned x) {
  float f;
  memcpy(&f, &x, 4);
  return f;
}
inline unsigned __float_as_uint(float x) {
  unsigned i;
  memcpy(&i, &x, 4);
  return i;
}
inline int __float2int_rn(float x) { return int(nearbyintf(x)); }
inline int __float2int_rz(float x) { return int(x); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(unsigned(x)); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline unsigned __brev(unsigned x) {
  unsigned r = 0;
  for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
  return r;
}
inline int min(int a, int b) { return a < b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
inline int __mul24(int a, int b) { return a * b; }
inline unsigned __umulhi(unsigned a, unsigned b) { return unsigned((unsigned long long)a * b >> 32); }
template <class T>
inline T __ldg(const T* p) {
  return *p;
}
template <class T>
inline T __ldcs(const T* p) {
  return *p;
}
template <class T>
inline T __ldcg(const T* p) {
  return *p;
}
template <class T>
inline void __stcs(T* p, T v) {
  *p = v;
}
template <class T>
inline void __stcg(T* p, T v) {
  *p = v;
}
inline long long clock64() { return 0; }
inline void __nanosleep(unsigned) {}

// ---------------------------------------------------------------------------------------------------------
// Exported entry points. ISOFLOP_EMU_EXPORT(kernel) after the kernel's definition (the harness's generated
// translation unit does this for every `extern "C" __global__` kernel it finds).
#define ISOFLOP_EMU_EXPORT(name)                                                                          \
  extern "C" __attribute__((visibility("default"))) int isoflop_emu_launch_##name(                        \
      unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, size_t shmem,          \
      void** args) {                                                                                       \
    return ::emu::launch(&name, dim3(gx, gy, gz), dim3(bx, by, bz), shmem, args);                         \
  }

// Defines the library-wide helpers once (in the harness's generated translation unit).
#define ISOFLOP_EMU_RUNTIME_EXPORTS                                                                        \
  extern "C" __attribute__((visibility("default"))) const char* isoflop_emu_last_error() {               \
    return ::emu::last_error().c_str();                                                                    \
  }                                                                                                        \
  extern "C" __attribute__((visibility("default"))) void isoflop_emu_set_schedule(int mode,              \
                                                                                  unsigned long long seed) { \
    ::emu::schedule_cfg().mode = mode;                                                                     \
    ::emu::schedule_cfg().seed = seed;                                                                     \
  }
