//! Where the cells of a fused chain go: per stage and cell its statistics group and
//! parameter offset, the connected components of cells that share groups, and the blocks
//! they are merged into.

use super::Shaped;
use crate::kernels::exec::Permutation;
use crate::kernels::simd;
use crate::plan::Plan;
use crate::state::{resize, LayerInfo};

/// Where the cells of a chain on one shape go: their groups and parameters per stage, and
/// the blocks.
#[derive(Debug, Default)]
pub(super) struct Layout {
    /// What it was built for: the layer's spec (by fingerprint), the cell length,
    /// [`simd::block_bytes`] and the element size (`None`: not built); and the shape.
    pub(super) key: Option<(u64, usize, usize, usize)>,
    pub(super) shape: Vec<usize>,
    pub(super) cells: usize,
    /// Per stage and cell (`s · cells + k`, memory order): statistics group, parameter offset.
    pub(super) group: Vec<usize>,
    pub(super) param: Vec<usize>,
    /// Per stage: values per statistics group, statistics groups, parameter values.
    pub(super) count: Vec<usize>,
    pub(super) groups: Vec<usize>,
    pub(super) params: Vec<usize>,
    /// The cells in block order (slot → cell), and back (cell → slot).
    pub(super) order: Permutation,
    pub(super) slot: Vec<usize>,
    /// Slots per block.
    pub(super) block: usize,
    /// Per stage: statistics groups per block, and where the stage's part of `gmap` and of a
    /// block's statistics starts.
    pub(super) ng: Vec<usize>,
    pub(super) goff: Vec<usize>,
    pub(super) loff: Vec<usize>,
    /// Per stage and slot (`s · cells + i`): the index of the cell's group within its block.
    pub(super) local: Vec<usize>,
    /// Per stage, block and local group (`goff[s] + b · ng[s] + j`): the statistics group.
    pub(super) gmap: Vec<usize>,
    /// Scratch of `build`; `ord` becomes `order` at its end.
    pub(super) gparam: Vec<usize>,
    pub(super) tmp: Vec<usize>,
    pub(super) ord: Vec<usize>,
}

impl Layout {
    /// The layout of cells of `len` elements of a chain on `shape` (elements of `elem`
    /// bytes); kept while the same layer runs on the same shape.
    pub(super) fn build(
        &mut self,
        info: &LayerInfo<'_>,
        (shape, plans): Shaped<'_>,
        len: usize,
        elem: usize,
    ) {
        let key = Some((info.fingerprint, len, simd::block_bytes(), elem));
        if self.key == key && self.shape == shape {
            return;
        }
        self.key = None;
        // The old order's buffer as this build's scratch (no allocation while it fits).
        self.ord = std::mem::take(&mut self.order).into_vec();
        let spec = info.spec;
        let nst = spec.stages.len();
        // The input exists: its element count fits (`cell_len` checked it is not zero).
        let cells = plans.first().map_or(0, |p| p.numel) / len;
        self.cells = cells;
        resize(&mut self.group, nst * cells, 0);
        resize(&mut self.param, nst * cells, 0);
        for v in [&mut self.count, &mut self.groups, &mut self.params] {
            v.clear();
        }
        for (s, plan) in plans.iter().enumerate().take(nst) {
            let cut = s * cells..(s + 1) * cells;
            cell_map(
                plan,
                len,
                &mut self.group[cut.clone()],
                &mut self.param[cut],
                &mut self.gparam,
            );
            self.count.push(plan.group_len);
            self.groups.push(plan.groups);
            self.params.push(plan.param_shape.numel());
        }
        if !(self.components(nst, len * elem) && self.local_groups(nst)) {
            // All cells as one block, in memory order (its groups always number alike).
            self.block = cells;
            self.ord.clear();
            self.ord.extend(0..cells);
            self.local_groups(nst);
        }
        // Checked once here, for every pass over this layout (`Split::Slots`).
        self.order = Permutation::new(std::mem::take(&mut self.ord))
            .unwrap_or_else(|_| panic!("cell order is a permutation"));
        resize(&mut self.slot, cells, usize::MAX);
        for (i, &k) in self.order.iter().enumerate() {
            self.slot[k] = i;
        }
        self.loff.clear();
        self.loff.extend(self.ng.iter().scan(0, |at, &n| {
            *at += n;
            Some(*at - n)
        }));
        self.shape.clear();
        self.shape.extend_from_slice(shape);
        self.key = key;
    }

    /// The blocks, from the connected cells (cells in one statistics group of any stage are
    /// connected; `cell` bytes each): in `order`, components in order of their first cell,
    /// each in memory order, consecutive ones merged into blocks of at least an eighth of
    /// [`simd::block_bytes`] where it allows (so each block's bookkeeping state is amortized
    /// over enough data). `false` when that makes one block, when the components differ in
    /// size, or when one exceeds `block_bytes`.
    pub(super) fn components(&mut self, nst: usize, cell: usize) -> bool {
        let cells = self.cells;
        // Union-find; a root is the first cell of its component.
        let parent = &mut self.tmp;
        parent.clear();
        parent.extend(0..cells);
        fn root(parent: &mut [usize], mut k: usize) -> usize {
            while parent[k] != k {
                parent[k] = parent[parent[k]];
                k = parent[k];
            }
            k
        }
        for s in 0..nst {
            let first = &mut self.ord;
            resize(first, self.groups[s], usize::MAX);
            for k in 0..cells {
                let g = self.group[s * cells + k];
                if first[g] == usize::MAX {
                    first[g] = k;
                    continue;
                }
                let (a, b) = (root(parent, k), root(parent, first[g]));
                parent[a.max(b)] = a.min(b);
            }
        }
        // Label components by first cell; count their cells.
        let (label, size) = (&mut self.slot, &mut self.gparam);
        resize(label, cells, 0);
        size.clear();
        for k in 0..cells {
            let r = root(parent, k);
            if r == k {
                label[k] = size.len();
                size.push(0);
            }
            label[k] = label[r];
            size[label[k]] += 1;
        }
        let (nb, bs) = (size.len(), size[0]);
        if nb < 2 || size.iter().any(|&n| n != bs) {
            return false;
        }
        let (bytes, cap) = (bs * cell, simd::block_bytes());
        if bytes > cap {
            return false;
        }
        // Components per block: the least divisor of their number that makes a block of
        // cap / 8 bytes, else the most that stays within `cap`.
        let fits = |k: &usize| nb % k == 0 && k * bytes <= cap;
        let k = (1..=nb)
            .filter(fits)
            .find(|k| k * bytes >= cap / 8)
            .or_else(|| (1..=nb).rev().find(fits))
            .unwrap_or(1);
        if k == nb {
            // One block: the one-block layout (memory order).
            return false;
        }
        self.block = k * bs;
        // Counting sort by label (stable: memory order within a component).
        let fill = &mut self.tmp;
        resize(fill, nb, 0);
        resize(&mut self.ord, cells, 0);
        for (k, &b) in label.iter().enumerate() {
            self.ord[b * bs + fill[b]] = k;
            fill[b] += 1;
        }
        true
    }

    /// Each block's statistics groups numbered by first slot; `false` when the blocks hold
    /// different numbers of groups.
    pub(super) fn local_groups(&mut self, nst: usize) -> bool {
        let (cells, bs) = (self.cells, self.block);
        resize(&mut self.local, nst * cells, 0);
        self.ng.clear();
        self.goff.clear();
        self.gmap.clear();
        for s in 0..nst {
            let tag = &mut self.tmp;
            resize(tag, self.groups[s], usize::MAX);
            self.goff.push(self.gmap.len());
            let mut ng = None;
            for (b, slots) in self.ord.chunks(bs).enumerate() {
                let mut n = 0;
                for (j, &k) in slots.iter().enumerate() {
                    let g = self.group[s * cells + k];
                    if tag[g] == usize::MAX {
                        tag[g] = n;
                        self.gmap.push(g);
                        n += 1;
                    }
                    self.local[s * cells + b * bs + j] = tag[g];
                }
                if *ng.get_or_insert(n) != n {
                    return false;
                }
            }
            self.ng.push(ng.unwrap_or(0));
        }
        true
    }

    pub(super) fn blocks(&self) -> usize {
        self.cells / self.block.max(1)
    }

    /// The statistics group of local group `j` of block `b` in stage `s`.
    pub(super) fn global(&self, s: usize, b: usize, j: usize) -> usize {
        self.gmap[self.goff[s] + b * self.ng[s] + j]
    }
}

/// Whether runs of `len` elements (from multiples of `len`) lie in one statistics group and
/// one parameter offset of `plan`: every dim that moves either has a stride that is a
/// multiple of `len`.
pub(super) fn constant_on(plan: &Plan, len: usize) -> bool {
    plan.dims[..plan.ndims]
        .iter()
        .filter(|d| moves(plan, d))
        .all(|d| d.xs >= len && d.xs % len == 0)
}

/// Whether `d` moves the statistics group or (unfolded) parameter offset of `plan`.
pub(super) fn moves(plan: &Plan, d: &crate::plan::Dim) -> bool {
    d.ss != 0 || (!plan.foldable && d.ps != 0)
}

/// Statistics group and parameter offset of every cell of `len` elements, in cell order
/// (`plan` constant on cells: [`constant_on`]). `gparam` is scratch.
fn cell_map(
    plan: &Plan,
    len: usize,
    group: &mut [usize],
    param: &mut [usize],
    gparam: &mut Vec<usize>,
) {
    if plan.foldable {
        resize(gparam, plan.groups, 0);
        plan.for_each_group(|g, p, _| gparam[g] = p);
    }
    // Per moving dim: cells per index step, countdown, index.
    let mut dims = [(crate::plan::Dim::default(), 0usize, 0usize, 0usize); crate::plan::MAX_DIMS];
    let mut nd = 0;
    for d in plan.dims[..plan.ndims].iter().filter(|d| moves(plan, d)) {
        dims[nd] = (*d, d.xs / len, 0, 0);
        nd += 1;
    }
    let dims = &mut dims[..nd];
    let (mut g, mut p) = (0usize, 0usize);
    for (gk, pk) in group.iter_mut().zip(param.iter_mut()) {
        *gk = g;
        *pk = if plan.foldable { gparam[g] } else { p };
        for (d, period, count, idx) in dims.iter_mut() {
            *count += 1;
            if *count < *period {
                continue;
            }
            *count = 0;
            *idx += 1;
            g += d.ss;
            p += d.ps;
            if *idx == d.size {
                *idx = 0;
                g -= d.size * d.ss;
                p -= d.size * d.ps;
            }
        }
    }
}
