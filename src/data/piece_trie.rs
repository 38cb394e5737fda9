//! A double-array trie over the byte strings of the vocabulary's pieces, for the Viterbi lattice:
//! one array load and one compare per input byte.

/// One double-array cell.
#[derive(Clone, Copy)]
struct Cell {
    /// Children of this node live at `base + byte`.
    base: u32,
    /// Parent of this cell (`u32::MAX`: free).
    check: u32,
    /// Piece id ending here, or -1.
    value: i32,
}

const FREE: u32 = u32::MAX;

/// A free cell with no piece: what the array grows with.
const EMPTY: Cell = Cell {
    base: 0,
    check: FREE,
    value: -1,
};

/// A static trie mapping byte strings to piece ids.
pub struct PieceTrie {
    cells: Vec<Cell>,
}

impl PieceTrie {
    /// Builds the trie from `(bytes, id)` pairs. Duplicate keys keep the first id.
    pub fn build(keys: &[(Vec<u8>, u32)]) -> Self {
        // A plain pointer trie first.
        struct Node {
            children: Vec<(u8, usize)>,
            value: i32,
        }
        let mut nodes = vec![Node {
            children: Vec::new(),
            value: -1,
        }];
        for (key, id) in keys {
            let mut cur = 0usize;
            for &b in key {
                cur = match nodes[cur].children.iter().find(|(c, _)| *c == b) {
                    Some(&(_, n)) => n,
                    None => {
                        nodes.push(Node {
                            children: Vec::new(),
                            value: -1,
                        });
                        let n = nodes.len() - 1;
                        nodes[cur].children.push((b, n));
                        n
                    }
                };
            }
            if nodes[cur].value < 0 {
                nodes[cur].value = *id as i32;
            }
        }
        // Place nodes breadth first; `slot[node]` is its cell index. Free cells form a doubly linked
        // list so the search for a base skips used cells; a search that fails `MAX_TRIES` times
        // places the node past the end of the used area instead.
        const MAX_TRIES: usize = 2048;
        let mut cells: Vec<Cell> = Vec::new();
        let mut next: Vec<usize> = Vec::new();
        let mut prev: Vec<usize> = Vec::new();
        let grow =
            |cells: &mut Vec<Cell>, next: &mut Vec<usize>, prev: &mut Vec<usize>, len: usize| {
                let old = cells.len();
                if len <= old {
                    return;
                }
                cells.resize(len, EMPTY);
                // Append the new cells to the free list (sentinel: index 0, which is the root, never free).
                let tail = prev.first().copied().unwrap_or(0);
                next.resize(len, 0);
                prev.resize(len, 0);
                let mut last = if old == 0 { 0 } else { tail };
                for (i, p) in prev.iter_mut().enumerate().skip(old.max(1)) {
                    next[last] = i;
                    *p = last;
                    last = i;
                }
                next[last] = 0;
                prev[0] = last;
            };
        grow(&mut cells, &mut next, &mut prev, nodes.len() * 2 + 512);
        cells[0].check = 0;
        cells[0].value = nodes[0].value;
        let take = |i: usize, next: &mut Vec<usize>, prev: &mut Vec<usize>| {
            let (p, n) = (prev[i], next[i]);
            next[p] = n;
            prev[n] = p;
        };
        let mut slot = vec![0usize; nodes.len()];
        let mut used_end = 1usize;
        let mut queue = std::collections::VecDeque::from([0usize]);
        while let Some(n) = queue.pop_front() {
            let mut kids = std::mem::take(&mut nodes[n].children);
            if kids.is_empty() {
                continue;
            }
            kids.sort_unstable_by_key(|k| k.0);
            let c0 = kids[0].0 as usize;
            let fits = |cells: &Vec<Cell>, b: usize| {
                kids.iter()
                    .all(|&(c, _)| cells.get(b + c as usize).is_none_or(|x| x.check == FREE))
            };
            let mut base = None;
            let mut p = next[0];
            for _ in 0..MAX_TRIES {
                if p == 0 {
                    break;
                }
                if p > c0 && fits(&cells, p - c0) {
                    base = Some(p - c0);
                    break;
                }
                p = next[p];
            }
            let base = base.unwrap_or(used_end.max(1));
            let need = base + 256 + 1;
            if need > cells.len() {
                let new_len = need.max(cells.len() * 2);
                grow(&mut cells, &mut next, &mut prev, new_len);
            }
            let s = slot[n];
            cells[s].base = base as u32;
            for &(c, child) in &kids {
                let t = base + c as usize;
                take(t, &mut next, &mut prev);
                cells[t].check = s as u32;
                cells[t].value = nodes[child].value;
                slot[child] = t;
                used_end = used_end.max(t + 1);
                queue.push_back(child);
            }
        }
        // Every reachable `base + byte` must be in bounds: pad past the largest base.
        let max_base = cells.iter().map(|c| c.base as usize).max().unwrap_or(0);
        let len = cells.len().max(max_base + 257);
        cells.resize(len, EMPTY);
        PieceTrie { cells }
    }

    /// Follows byte `b` from `node`: the child node, or `None`.
    #[inline(always)]
    pub fn step(&self, node: u32, b: u8) -> Option<u32> {
        let t = self.cells[node as usize].base as usize + b as usize;
        let cell = self.cells.get(t)?;
        (cell.check == node).then_some(t as u32)
    }

    /// The piece id ending at `node`, or -1.
    #[inline(always)]
    pub fn value(&self, node: u32) -> i32 {
        self.cells[node as usize].value
    }

    /// The id of exactly `key`, if it is a piece.
    pub fn get(&self, key: &[u8]) -> Option<u32> {
        let mut n = 0;
        for &b in key {
            n = self.step(n, b)?;
        }
        let v = self.value(n);
        (v >= 0).then_some(v as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_exactly_the_keys() {
        let keys: Vec<(Vec<u8>, u32)> = ["a", "ab", "abc", "b", "\u{2581}the", "\u{2581}t", "zz"]
            .iter()
            .enumerate()
            .map(|(i, k)| (k.as_bytes().to_vec(), i as u32))
            .collect();
        let t = PieceTrie::build(&keys);
        for (k, id) in &keys {
            assert_eq!(t.get(k), Some(*id));
        }
        for missing in ["", "c", "abcd", "\u{2581}", "\u{2581}th", "z"] {
            assert_eq!(t.get(missing.as_bytes()), None, "{missing}");
        }
    }
}
