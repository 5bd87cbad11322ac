"""Maximum-weight matching of a sparse bipartite graph in which a node may stay unmatched.

The sparse matcher of `matching.py` asks: among the candidate edges, which set of disjoint
pairs has the largest total weight? No node has to be matched (a latent that never fires has
no partner worth taking). Solved exactly, in steps that each keep the optimum:

1. Edges of weight <= 0 are dropped: removing such an edge from any matching never lowers its
   total, so some optimum avoids them all. Nodes left without an edge stay unmatched.
2. Dominant edges are fixed, in rounds: an edge weighing at least the best other edge of its
   row plus the best other edge of its column is in some optimum (`_dominant_edges`). A latent
   with a clear counterpart (a twin at cosine 0.85 among partners at 0.15) is settled here.
3. The rest is split into connected components (`scipy.sparse.csgraph.connected_components`);
   the optimum is the union of the components' optima.
4. A component of one edge is that edge; one of at most `dense_cells` cells is solved densely
   (`scipy.optimize.linear_sum_assignment` on its weight block, a missing edge weighing 0,
   which is what leaving both ends unmatched is worth, so a pair of weight 0 in the answer
   means "unmatched"); a larger one sparsely with `min_weight_full_bipartite_matching`
   (LAPJVsp) on a *rectangular* graph: the component's smaller side as rows, each row with one
   private stand-in column it can always take. scipy then only has to cover the rows. Costs
   are ``top - weight`` for edges and ``top`` for stand-ins (``top`` above every weight, so all
   costs are positive), and a full matching costs ``top * n_rows - total weight``.

Why not the earlier square "doubled" graph (stand-in nodes on both sides and a mirrored copy of
every edge): on the activation-correlation graph of two 8,192-latent seeds (one component of
7,505 x 7,515 latents) LAPJVsp did not finish in 20 minutes on it, against seconds for the
rectangular graph. The rectangular graph has its own weakness: scipy skips its initial
(column reduction, augmenting row reduction) phase for non-square graphs, so every row runs a
shortest-path search; on 16,384-latent decoder graphs that made it 6x slower than the doubled
graph, which step 2 removes (docs/comparison.md has the measurements).
"""

from __future__ import annotations

import numpy as np

MAX_ROUNDS = 50
"""Rounds of fixing dominant edges (each round is a few sorts of the remaining edges)."""
DENSE_CELLS = 1024 * 1024
"""Components with at most this many (row, column) cells are solved densely (8 MiB)."""


def max_weight_matching(n_rows: int, n_cols: int, rows: np.ndarray, cols: np.ndarray,
                        weight: np.ndarray, dense_cells: int = DENSE_CELLS
                        ) -> tuple[np.ndarray, np.ndarray]:
    """The pairs (rows, cols) of a maximum-weight matching on the edges (`rows`, `cols`,
    `weight`); nodes may stay unmatched, so only edges of positive weight are ever used.
    Edges must be distinct. Returns int64 arrays sorted by row."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    keep = np.asarray(weight) > 0
    r = np.asarray(rows, np.int64)[keep]
    c = np.asarray(cols, np.int64)[keep]
    w = np.asarray(weight, np.float64)[keep]
    fixed_r, fixed_c = [], []
    for _ in range(MAX_ROUNDS):
        dominant = _dominant_edges(n_rows, n_cols, r, c, w)
        if not dominant.any():
            break
        fixed_r.append(r[dominant])
        fixed_c.append(c[dominant])
        free_r, free_c = np.ones(n_rows, bool), np.ones(n_cols, bool)
        free_r[r[dominant]], free_c[c[dominant]] = False, False
        keep = free_r[r] & free_c[c]
        r, c, w = r[keep], c[keep], w[keep]
    if r.size == 0:
        return _sorted(fixed_r, fixed_c)
    n = n_rows + n_cols
    adjacency = coo_matrix((np.ones(r.size, np.int8), (r, n_rows + c)), shape=(n, n))
    _, label = connected_components(adjacency, directed=False)
    edge_label = label[r]
    order = np.argsort(edge_label, kind="stable")
    r, c, w, edge_label = r[order], c[order], w[order], edge_label[order]
    starts = np.flatnonzero(np.r_[True, edge_label[1:] != edge_label[:-1]])
    ends = np.r_[starts[1:], r.size]
    single = ends - starts == 1  # one edge: that edge is the component's optimum
    out_r, out_c = [*fixed_r, r[starts[single]]], [*fixed_c, c[starts[single]]]
    for start, end in zip(starts[~single], ends[~single], strict=True):
        sub_r, sub_c = _component_matching(r[start:end], c[start:end], w[start:end],
                                           dense_cells)
        out_r.append(sub_r)
        out_c.append(sub_c)
    return _sorted(out_r, out_c)


def _sorted(rows: list[np.ndarray], cols: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The pairs of several partial results, as int64 arrays sorted by row."""
    match_r = np.concatenate([np.zeros(0, np.int64), *rows])
    match_c = np.concatenate([np.zeros(0, np.int64), *cols])
    order = np.argsort(match_r)
    return match_r[order], match_c[order]


def _dominant_edges(n_rows: int, n_cols: int, r: np.ndarray, c: np.ndarray, w: np.ndarray
                    ) -> np.ndarray:
    """Edges that some maximum-weight matching contains: (i, j) weighing at least the best
    other edge of i plus the best other edge of j (0 where there is none). Exchange argument:
    in an optimum pairing i with j' and j with i', swapping both pairs for (i, j) loses
    nothing. Only edges that are their row's and their column's first best edge are taken,
    so no two share a node; taking one keeps the others dominant (removing edges only lowers
    the others' rivals), so all are taken at once."""
    arg_r, second_r, first_r = _best_two(r, w, n_rows)
    arg_c, second_c, first_c = _best_two(c, w, n_cols)
    edge = np.arange(r.size)
    top_r, top_c = arg_r[r] == edge, arg_c[c] == edge
    rival_r = np.where(top_r, second_r[r], first_r[r])
    rival_c = np.where(top_c, second_c[c], first_c[c])
    return top_r & top_c & (w >= rival_r + rival_c)


def _best_two(group: np.ndarray, w: np.ndarray, n: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per node: the index of its best edge (-1 if none), its second-best and best weight
    (0 where there is none; weights are positive)."""
    order = np.lexsort((-w, group))
    g = group[order]
    first = np.r_[True, g[1:] != g[:-1]] if g.size else np.zeros(0, bool)
    arg = np.full(n, -1, np.int64)
    best, second = np.zeros(n), np.zeros(n)
    arg[g[first]] = order[first]
    best[g[first]] = w[order[first]]
    nxt = np.flatnonzero(first) + 1
    nxt = nxt[nxt < g.size]
    nxt = nxt[g[nxt] == g[nxt - 1]]
    second[g[nxt]] = w[order[nxt]]
    return arg, second, best


def _component_matching(r: np.ndarray, c: np.ndarray, w: np.ndarray, dense_cells: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-weight matching of one connected component (positive weights)."""
    from scipy.optimize import linear_sum_assignment

    row_ids, local_r = np.unique(r, return_inverse=True)
    col_ids, local_c = np.unique(c, return_inverse=True)
    if row_ids.size * col_ids.size <= dense_cells:
        block = np.zeros((row_ids.size, col_ids.size))
        block[local_r, local_c] = w
        sub_r, sub_c = linear_sum_assignment(block, maximize=True)
        taken = block[sub_r, sub_c] > 0  # a zero cell is no edge: both ends stay unmatched
        return row_ids[sub_r[taken]], col_ids[sub_c[taken]]
    if row_ids.size > col_ids.size:
        sub_c, sub_r = _sparse_matching(col_ids.size, row_ids.size, local_c, local_r, w)
    else:
        sub_r, sub_c = _sparse_matching(row_ids.size, col_ids.size, local_r, local_c, w)
    return row_ids[sub_r], col_ids[sub_c]


def _sparse_matching(n_rows: int, n_cols: int, r: np.ndarray, c: np.ndarray, w: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-weight matching by LAPJVsp on the rectangular graph with one private stand-in
    column per row (`n_rows <= n_cols`; see the module docstring)."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import min_weight_full_bipartite_matching

    top = float(w.max()) + 1.0  # every cost >= 1: scipy drops zero weights
    ids = np.arange(n_rows, dtype=np.int64)
    graph = csr_matrix((np.r_[top - w, np.full(n_rows, top)],
                        (np.r_[r, ids], np.r_[c, n_cols + ids])),
                       shape=(n_rows, n_cols + n_rows))
    match_r, match_c = (m.astype(np.int64) for m in min_weight_full_bipartite_matching(graph))
    real = match_c < n_cols
    return match_r[real], match_c[real]
