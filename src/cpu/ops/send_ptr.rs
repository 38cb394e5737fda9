//! A raw pointer that may cross rayon threads, for kernels whose tasks write disjoint strided blocks.

/// A mutable pointer shared by parallel tasks that each write a disjoint set of elements.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(*mut f32);

// SAFETY: the users of SendPtr only hand it to tasks that write disjoint elements of one buffer that
// outlives the parallel section.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// Wrap the start of a buffer.
    pub(crate) fn new(p: *mut f32) -> Self {
        SendPtr(p)
    }
    /// The pointer (a method, so that closures capture the whole `Sync` wrapper).
    pub(crate) fn get(&self) -> *mut f32 {
        self.0
    }
}
