//! Token embedding lookup: `out[n] = embed[tokens[n]]`.

/// Gather the embedding rows of `tokens_N` into `out_NxD` (`=`).
pub fn embedding_forward(embed_VxD: &[f32], tokens_N: &[u16], out_NxD: &mut [f32], d: usize) {
    assert_eq!(
        out_NxD.len(),
        tokens_N.len() * d,
        "embedding_forward: out size"
    );
    for (row, &tok) in out_NxD.chunks_exact_mut(d).zip(tokens_N) {
        let at = tok as usize * d;
        assert!(
            at + d <= embed_VxD.len(),
            "embedding_forward: token {tok} outside the table"
        );
        row.copy_from_slice(&embed_VxD[at..at + d]);
    }
}

/// Scatter-add `dout_NxD` into the rows of `dembed_VxD` named by `tokens_N` (`+=`), in token order.
pub fn embedding_backward(dout_NxD: &[f32], tokens_N: &[u16], dembed_VxD: &mut [f32], d: usize) {
    assert_eq!(
        dout_NxD.len(),
        tokens_N.len() * d,
        "embedding_backward: dout size"
    );
    for (row, &tok) in dout_NxD.chunks_exact(d).zip(tokens_N) {
        let at = tok as usize * d;
        assert!(
            at + d <= dembed_VxD.len(),
            "embedding_backward: token {tok} outside the table"
        );
        for (g, &x) in dembed_VxD[at..at + d].iter_mut().zip(row) {
            *g += x;
        }
    }
}
