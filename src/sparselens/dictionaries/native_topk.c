/* Exact top-k of every row of a pre-activation tile, in about one pass over the row (CPU).
 *
 * sparselens compiles this file on first use (native_topk.py) and calls it with ctypes; no
 * torch headers, so it builds in well under a second. A row of n entries is split into G = n / L
 * strided groups of L entries (entry j in group j mod G, as `grouped_topk` does in torch; L
 * the power of two nearest sqrt(n / k), which balances steps 2 and 3):
 *
 * 1. the maximum of every group, by element-wise maxima of L consecutive slices of G
 *    entries (vertical vector instructions, one streaming read of the row);
 * 2. `cutoff`, the k-th largest group maximum (a binary search on the value whose probes
 *    are vectorised counts): at least k entries reach it, so every top-k entry does too;
 * 3. the entries of the groups whose maximum reaches `cutoff` (about k groups, L entries
 *    each, read from L1) that reach it themselves are the candidates; the same search
 *    finds the k-th largest of them, and the k largest are kept.
 *
 * `torch.topk` instead partially sorts (value, index) pairs of every entry: about 5 ns an
 * entry on 2 cores, against a fraction of a nanosecond here.
 *
 * Entries are ranked by an int32 key with the order of the floats (sign-magnitude flipped to
 * two's complement), so the loops are integer compares the compiler vectorises without
 * fast-math. The bias (b_enc) is added while reading, so the GEMM before it needs no bias
 * pass. A NaN pre-activation counts as the largest (as in torch.topk) and is returned as
 * NaN, so a diverged run shows up in the loss. Ties at the k-th value may pick any of the
 * equal entries.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* An int32 with the order of the float (or of its magnitude); NaN above everything. */
static inline int32_t rank_key(float value, int magnitude) {
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    uint32_t size = bits & 0x7fffffffu;
    int32_t ordered = (int32_t)bits ^ (int32_t)((uint32_t)((int32_t)bits >> 31) >> 1);
    int32_t key = magnitude ? (int32_t)size : ordered;
    return size > 0x7f800000u ? INT32_MAX : key; /* branch-free, so loops vectorise */
}

static inline float from_bf16(uint16_t half) {
    uint32_t bits = (uint32_t)half << 16;
    float value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

/* Entry j of a tile row (bfloat16 or float32) plus its bias. */
static inline float entry(const void *row, int bf16, const float *bias, int64_t j) {
    float value = bf16 ? from_bf16(((const uint16_t *)row)[j]) : ((const float *)row)[j];
    return value + bias[j];
}

/* most[g] = max(most[g], key of entry start + g) for g < count: one slice of the row. */
static inline void fold_slice(const void *row, int bf16, const float *restrict bias,
                              int64_t start, int64_t count, int magnitude,
                              int32_t *restrict most) {
    if (bf16) {
        const uint16_t *src = (const uint16_t *)row + start;
        for (int64_t g = 0; g < count; g++) {
            int32_t key = rank_key(from_bf16(src[g]) + bias[start + g], magnitude);
            most[g] = key > most[g] ? key : most[g];
        }
    } else {
        const float *src = (const float *)row + start;
        for (int64_t g = 0; g < count; g++) {
            int32_t key = rank_key(src[g] + bias[start + g], magnitude);
            most[g] = key > most[g] ? key : most[g];
        }
    }
}

static inline int32_t count_at_least(const int32_t *restrict keys, int32_t m, int32_t t) {
    int32_t count = 0; /* int32 throughout: 16 lanes a vector instruction */
    for (int32_t j = 0; j < m; j++) count += keys[j] >= t;
    return count;
}

/* The k-th largest of keys[0..m) (k <= m): a binary search on the key value, each probe one
 * vectorised counting pass (branch-free, unlike a quickselect's partitioning). */
static int32_t kth_largest(const int32_t *restrict keys, int64_t m, int64_t k) {
    int32_t least = INT32_MAX, most = INT32_MIN;
    for (int64_t j = 0; j < m; j++) {
        least = keys[j] < least ? keys[j] : least;
        most = keys[j] > most ? keys[j] : most;
    }
    int64_t lo = least, hi = most; /* count_at_least(lo) >= k throughout */
    while (lo < hi) {
        int64_t mid = lo + (hi - lo + 1) / 2;
        if (count_at_least(keys, (int32_t)m, (int32_t)mid) >= k) lo = mid;
        else hi = mid - 1;
    }
    return (int32_t)lo;
}

/* One row into its k output slots. scratch: G + 2 n int32 (group maxima, then candidate
 * keys and entry ids). */
static void row_topk(const void *row, int bf16, int64_t n, int64_t lanes, const float *bias,
                     int64_t k, int magnitude, float *values, int64_t *ids,
                     int32_t *scratch) {
    int64_t groups = (n + lanes - 1) / lanes;
    int32_t *most = scratch, *keys = most + groups, *entries = keys + n;
    int32_t cutoff = INT32_MIN;
    if (groups >= k) {
        for (int64_t g = 0; g < groups; g++) most[g] = INT32_MIN;
        for (int64_t lane = 0; lane < lanes; lane++) {
            int64_t start = lane * groups;
            int64_t count = n - start < groups ? n - start : groups;
            if (count <= 0) break;
            if (bf16 && magnitude) fold_slice(row, 1, bias, start, count, 1, most);
            else if (bf16) fold_slice(row, 1, bias, start, count, 0, most);
            else if (magnitude) fold_slice(row, 0, bias, start, count, 1, most);
            else fold_slice(row, 0, bias, start, count, 0, most);
        }
        cutoff = kth_largest(most, groups, k);
    }
    int64_t m = 0;
    for (int64_t g = 0; g < groups; g++) {
        if (groups >= k && most[g] < cutoff) continue;
        for (int64_t j = g; j < n; j += groups) {
            int32_t key = rank_key(entry(row, bf16, bias, j), magnitude);
            if (key >= cutoff) {
                keys[m] = key;
                entries[m++] = (int32_t)j;
            }
        }
    }
    /* keep the candidates above the k-th largest, then as many equal to it as fit */
    int32_t last = m > k ? kth_largest(keys, m, k) : INT32_MIN;
    int64_t kept = 0;
    for (int64_t j = 0; j < m && kept < k; j++)
        if (keys[j] > last) ids[kept++] = entries[j];
    for (int64_t j = 0; j < m && kept < k; j++)
        if (keys[j] == last) ids[kept++] = entries[j];
    for (int64_t j = 0; j < k; j++) values[j] = entry(row, bf16, bias, ids[j]);
}

/* pre: rows x n (row_stride elements apart), bfloat16 if bf16 else float32; values (float32)
 * and indices (int64): rows x k, unordered within a row; values are the signed
 * pre-activations plus bias. Needs k <= n < 2^31. Returns 0, or -1 if scratch memory could
 * not be allocated. */
int sparselens_topk(const void *pre, int bf16, int64_t rows, int64_t n, int64_t row_stride,
                    const float *bias, int64_t k, int magnitude, float *values,
                    int64_t *indices, int threads) {
    int failed = 0;
    size_t entry_size = bf16 ? 2 : 4;
    int64_t lanes = 1;
    while ((2 * lanes) * (2 * lanes) * k <= n) lanes *= 2;
    size_t scratch_size = sizeof(int32_t) * ((n + lanes - 1) / lanes + 2 * n);
#pragma omp parallel num_threads(threads) reduction(| : failed)
    {
        int32_t *scratch = malloc(scratch_size);
        if (scratch == NULL) failed = 1;
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; r++) {
            if (scratch == NULL) continue;
            const void *row = (const char *)pre + r * row_stride * entry_size;
            row_topk(row, bf16, n, lanes, bias, k, magnitude, values + r * k, indices + r * k,
                     scratch);
        }
        free(scratch);
    }
    return failed ? -1 : 0;
}
