// An inverted-residual block's expansion (1x1 convolution, its bias, ReLU6; optional), depthwise k x k
// convolution with zero padding, its bias and ReLU6, in one pass; and its backward pass for the input
// only. fp32, channels-last (NHWC), frozen weights. PyTorch runs these as six passes over the block's
// widest activation each way; here the expansion lives only in a few rows that stay in the core's
// cache, which is what counts on a CPU whose time goes into moving memory. Built and loaded by
// dreamcore/native.py with the C++ compiler at hand (-march=native); its threads are PyTorch's own.
// Also the overlap-add behind an image stem's input gradient (see overlap_add_rows).
#ifdef __AVX512F__
#include <immintrin.h>
#endif
#include <omp.h>
#include <cstddef>
#include <cstring>
#include <vector>

namespace {
// One vector is one register of the machine the code is built for, and register blocks are sized to
// that machine's register file: 16-float vectors on AVX2 are pairs of registers, and blocks sized for
// AVX-512's 32 registers spill on AVX2's 16 (that made these kernels 4x slower than PyTorch there).
#if defined(__AVX512F__)
constexpr int L = 16, REGISTERS = 32;
#elif defined(__AVX__)
constexpr int L = 8, REGISTERS = 16;
#elif defined(__aarch64__)
constexpr int L = 4, REGISTERS = 32;
#else
constexpr int L = 4, REGISTERS = 16;
#endif
typedef float vf __attribute__((vector_size(4 * L)));
typedef int vi __attribute__((vector_size(4 * L)));
typedef unsigned char vb __attribute__((vector_size(L)));
constexpr int B = 8;  // pixels per register block

inline vf load(const float *p) { vf v; std::memcpy(&v, p, sizeof v); return v; }
inline void store(float *p, vf v) { std::memcpy(p, &v, sizeof v); }
inline vf relu6(vf v) {
    const vf zero = {}, six = zero + 6.f;
#ifdef __AVX512F__  // one instruction each, where the portable form below takes a compare and a blend
    return (vf)_mm512_min_ps(_mm512_max_ps((__m512)v, (__m512)zero), (__m512)six);
#else
    v = v < zero ? zero : v;
    return v > six ? six : v;
#endif
}
inline vf passes(vf v, vf g) {  // g where ReLU6 passes gradient (0 < v < 6), else 0
    const vf zero = {}, six = zero + 6.f;
    return (v > zero && v < six) ? g : zero;
}
inline float relu6(float v) { return v < 0.f ? 0.f : (v > 6.f ? 6.f : v); }
inline float passes(float v, float g) { return (v > 0.f && v < 6.f) ? g : 0.f; }

struct Geometry {
    int H, W, C, K, S, pt, pl, OH, OW;
};

// The input side's ReLU6 in the backward pass: none (a block without expansion), the expansion the
// forward pass read (computed outside), or the bytes it kept of where the expansion's ReLU6 passed
// gradient (computed inside). Indexed within one input row.
struct AllPass {
    vf operator()(size_t, vf g) const { return g; }
    float operator()(size_t, float g) const { return g; }
};
struct FloatMask {
    const float *x;
    vf operator()(size_t at, vf g) const { return passes(load(x + at), g); }
    float operator()(size_t at, float g) const { return passes(x[at], g); }
};
struct ByteMask {
    const unsigned char *bytes;
    vf operator()(size_t at, vf g) const {
        vb on;
        std::memcpy(&on, bytes + at, sizeof on);
        const vf zero = {};
        return __builtin_convertvector(on, vi) != 0 ? g : zero;
    }
    float operator()(size_t at, float g) const { return bytes[at] ? g : 0.f; }
};

// out[p, n] = bias[n] + sum_k a[p*lda + k] * b[k*ldb + n] for PB pixels and V vectors of n from n0;
// b (and bias) zero-padded to whole vectors; columns from nvalid on are not stored.
template <int PB, int V>
inline void gemm_tile(const float *a, int lda, const float *b, int ldb, const float *bias, float *out, int ldo, int K,
                      int n0, int nvalid) {
    vf acc[PB][V];
    for (int v = 0; v < V; v++) {
        const vf init = bias ? load(bias + n0 + v * L) : vf{};
        for (int i = 0; i < PB; i++) acc[i][v] = init;
    }
    for (int k = 0; k < K; k++) {
        vf bv[V];
        for (int v = 0; v < V; v++) bv[v] = load(b + (size_t)k * ldb + n0 + v * L);
        for (int i = 0; i < PB; i++) {
            const float s = a[(size_t)i * lda + k];
            for (int v = 0; v < V; v++) acc[i][v] += s * bv[v];
        }
    }
    for (int i = 0; i < PB; i++) {
        for (int v = 0; v < V; v++) {
            const int n = n0 + v * L;
            if (n + L <= nvalid) {
                store(out + (size_t)i * ldo + n, acc[i][v]);
            } else {
                float part[L];
                store(part, acc[i][v]);
                for (int j = 0; n + j < nvalid; j++) out[(size_t)i * ldo + n + j] = part[j];
            }
        }
    }
}

// Pixels per register block for V vectors of columns: as many as the registers hold beside a row of
// b and a broadcast (8 and 4 on AVX-512; 8, 6 and 4 on AVX2). Few columns take more pixels, so that
// loads of b do not dominate.
template <int V>
constexpr int pixels_per_block() {
    return REGISTERS >= 32 ? (V <= 2 ? 8 : 4) : ((REGISTERS - 1 - V) / V >= 8 ? 8 : (REGISTERS - 1 - V) / V);
}
constexpr int VECTORS_PER_BLOCK = REGISTERS >= 32 ? 4 : 3;

template <int V>
void gemm_columns(const float *a, int lda, int P, const float *b, int ldb, const float *bias, float *out, int ldo,
                  int K, int n0, int N) {
    constexpr int PB = pixels_per_block<V>();
    int p = 0;
    for (; p + PB <= P; p += PB) gemm_tile<PB, V>(a + (size_t)p * lda, lda, b, ldb, bias, out + (size_t)p * ldo, ldo, K, n0, N);
    if (PB > 4) {
        for (; p + 4 <= P; p += 4) gemm_tile<4, V>(a + (size_t)p * lda, lda, b, ldb, bias, out + (size_t)p * ldo, ldo, K, n0, N);
    }
    for (; p < P; p++) gemm_tile<1, V>(a + (size_t)p * lda, lda, b, ldb, bias, out + (size_t)p * ldo, ldo, K, n0, N);
}

// A row of pixels through a 1x1 convolution: out (P, N) = bias + a (P, K) @ b (K, N). Columns of b
// in the outer loop, a few vectors at a time, so that they stay in the L1 cache across the pixels.
void gemm_rows(const float *a, int lda, int P, const float *b, int ldb, const float *bias, float *out, int ldo, int K,
               int N) {
    const int vectors = (N + L - 1) / L;
    for (int v0 = 0; v0 < vectors; v0 += VECTORS_PER_BLOCK) {
        switch (vectors - v0 < VECTORS_PER_BLOCK ? vectors - v0 : VECTORS_PER_BLOCK) {
            case 1: gemm_columns<1>(a, lda, P, b, ldb, bias, out, ldo, K, v0 * L, N); break;
            case 2: gemm_columns<2>(a, lda, P, b, ldb, bias, out, ldo, K, v0 * L, N); break;
            case 3: gemm_columns<3>(a, lda, P, b, ldb, bias, out, ldo, K, v0 * L, N); break;
            default: gemm_columns<4>(a, lda, P, b, ldb, bias, out, ldo, K, v0 * L, N); break;
        }
    }
}

// One output row: out[ow, :] = relu6(b + sum_k w[k, :] * a(rows[kh][ow*S - pl + kw, :])), where rows[kh] is
// input row oh*S - pt + kh, or null where that falls outside the image (the zero padding), and a is
// ReLU6 (an expansion computed outside) or nothing.
template <bool RELU_IN>
void forward_row(const Geometry &g, const float *const *rows, const float *w, const float *b, float *out) {
    const int C = g.C, K = g.K, S = g.S, W = g.W, vec = C / L * L;
    int kh0 = 0, kh1 = K;
    while (kh0 < K && !rows[kh0]) kh0++;
    while (kh1 > kh0 && !rows[kh1 - 1]) kh1--;
    for (int ow0 = 0; ow0 < g.OW; ow0 += B) {
        const int n = g.OW - ow0 < B ? g.OW - ow0 : B;
        const int left = ow0 * S - g.pl;
        float *o = out + (size_t)ow0 * C;
        const bool inside = n == B && left >= 0 && left + (B - 1) * S + K <= W;
        if (inside) {  // every tap inside: no checks
            for (int c = 0; c < vec; c += L) {
                vf acc[B];
                for (int j = 0; j < B; j++) acc[j] = load(b + c);
                for (int kh = kh0; kh < kh1; kh++) {
                    for (int kw = 0; kw < K; kw++) {
                        const vf wv = load(w + (size_t)(kh * K + kw) * C + c);
                        const float *p = rows[kh] + (size_t)(left + kw) * C + c;
                        for (int j = 0; j < B; j++) {
                            const vf v = load(p + (size_t)j * S * C);
                            acc[j] += (RELU_IN ? relu6(v) : v) * wv;
                        }
                    }
                }
                for (int j = 0; j < B; j++) store(o + (size_t)j * C + c, relu6(acc[j]));
            }
            if (vec == C) continue;
        }
        for (int j = 0; j < n && !inside; j++) {  // border pixels, a vector at a time
            for (int c = 0; c < vec; c += L) {
                vf acc = load(b + c);
                for (int kh = kh0; kh < kh1; kh++) {
                    for (int kw = 0; kw < K; kw++) {
                        const int iw = left + j * S + kw;
                        if (iw < 0 || iw >= W) continue;
                        const vf v = load(rows[kh] + (size_t)iw * C + c);
                        acc += (RELU_IN ? relu6(v) : v) * load(w + (size_t)(kh * K + kw) * C + c);
                    }
                }
                store(o + (size_t)j * C + c, relu6(acc));
            }
        }
        for (int j = 0; j < n; j++) {  // channels past the last full vector
            for (int c = vec; c < C; c++) {
                float acc = b[c];
                for (int kh = kh0; kh < kh1; kh++) {
                    for (int kw = 0; kw < K; kw++) {
                        const int iw = left + j * S + kw;
                        if (iw < 0 || iw >= W) continue;
                        const float v = rows[kh][(size_t)iw * C + c];
                        acc += (RELU_IN ? relu6(v) : v) * w[(size_t)(kh * K + kw) * C + c];
                    }
                }
                o[(size_t)j * C + c] = relu6(acc);
            }
        }
    }
}

// In place: v = relu6(v), and bytes = 1 where ReLU6 passes gradient (0 < v < 6), else 0.
void relu6_keeping_mask(float *v, unsigned char *bytes, size_t count) {
    const vf zero = {}, six = zero + 6.f;
    size_t i = 0;
    for (; i + L <= count; i += L) {
        const vf r = relu6(load(v + i));
        store(v + i, r);
        const vb on = __builtin_convertvector((r > zero) & (r < six), vb) & 1;
        std::memcpy(bytes + i, &on, sizeof on);
    }
    for (; i < count; i++) {
        v[i] = relu6(v[i]);
        bytes[i] = v[i] > 0.f && v[i] < 6.f;
    }
}

// K rows of `size` floats, row i in slot i % K (K consecutive rows never share a slot): the rows a
// k x k window needs, each filled once by fill(i, slot) while it stays in the ring.
class RowRing {
   public:
    RowRing(int K, size_t size) : K(K), size(size), data((size_t)K * size), held(K, -1) {}
    template <class Fill>
    const float *row(int i, Fill fill) {
        float *slot = data.data() + (size_t)(i % K) * size;
        if (held[i % K] != i) {
            fill(i, slot);
            held[i % K] = i;
        }
        return slot;
    }

   private:
    int K;
    size_t size;
    std::vector<float> data;
    std::vector<int> held;
};

// Output rows [r0, r1). Without expansion (we null), rows point into x (H, W, C). With it, x is the
// block's input (H, W, Cin) and each input row a window needs is expanded once into a ring of K rows.
void forward_rows(const Geometry &g, const float *x, int Cin, const float *we, const float *be, bool relu_in,
                  const float *w, const float *b, float *y, unsigned char *mask, int r0, int r1) {
    const int K = g.K, C = g.C, W = g.W;
    const float *rows[16];
    RowRing ring(K, we ? (size_t)W * C : 0);
    for (int oh = r0; oh < r1; oh++) {
        for (int kh = 0; kh < K; kh++) {
            const int ih = oh * g.S - g.pt + kh;
            if (ih < 0 || ih >= g.H) {
                rows[kh] = nullptr;
            } else if (!we) {
                rows[kh] = x + (size_t)ih * W * C;
            } else {
                rows[kh] = ring.row(ih, [&](int i, float *slot) {
                    gemm_rows(x + (size_t)i * W * Cin, Cin, W, we, C, be, slot, C, Cin, C);
                    relu6_keeping_mask(slot, mask + (size_t)i * W * C, (size_t)W * C);
                });
            }
        }
        float *out = y + (size_t)oh * g.OW * C;
        relu_in ? forward_row<true>(g, rows, w, b, out) : forward_row<false>(g, rows, w, b, out);
    }
}

// out = gy where the output's ReLU6 passed gradient (0 < y < 6), else 0; count values
void masked_gradient(const float *gy, const float *y, float *out, size_t count) {
    size_t i = 0;
    for (; i + L <= count; i += L) store(out + i, passes(load(y + i), load(gy + i)));
    for (; i < count; i++) out[i] = passes(y[i], gy[i]);
}

// out[iw, :] = mask * (sum over the taps that reached (ih, iw) of w[k, :] * m[oh, ow, :]), one input row;
// rows[kh] is the output row oh = (ih + pt - kh) / S of m (the output's gradient where its ReLU6
// passed it), or null where kernel row kh does not reach ih. Input columns are taken in residue
// classes iw = r + S*q: within one, every pixel is reached by the same kernel columns kw, at
// consecutive output columns.
template <class Mask>
void backward_row(const Geometry &g, const float *const *rows, const Mask &mask, const float *w, float *out) {
    const int C = g.C, K = g.K, S = g.S, W = g.W, vec = C / L * L;
    int khs[16], kws[16], ow_at_q0[16];  // K <= 16, checked on entry
    const float *mrows[16];
    int nh = 0;
    for (int kh = 0; kh < K; kh++) {
        if (rows[kh]) khs[nh] = kh, mrows[nh++] = rows[kh];
    }
    for (int r = 0; r < S && r < W; r++) {
        int nw = 0;
        for (int kw = 0; kw < K; kw++) {
            const int u = r + g.pl - kw;  // (u + S*q) / S is the output column of pixel q
            if (((u % S) + S) % S == 0) kws[nw] = kw, ow_at_q0[nw++] = u >= 0 ? u / S : -((-u) / S);
        }
        const int columns = (W - r + S - 1) / S;
        for (int q0 = 0; q0 < columns; q0 += B) {
            const int n = columns - q0 < B ? columns - q0 : B;
            bool inside = n == B;
            for (int i = 0; i < nw && inside; i++) inside = ow_at_q0[i] + q0 >= 0 && ow_at_q0[i] + q0 + B <= g.OW;
            const size_t first = ((size_t)r + (size_t)S * q0) * C;
            if (inside) {
                for (int c = 0; c < vec; c += L) {
                    vf acc[B] = {};
                    for (int a = 0; a < nh; a++) {
                        for (int i = 0; i < nw; i++) {
                            const vf wv = load(w + (size_t)(khs[a] * K + kws[i]) * C + c);
                            const float *p = mrows[a] + ((size_t)ow_at_q0[i] + q0) * C + c;
                            for (int j = 0; j < B; j++) acc[j] += load(p + (size_t)j * C) * wv;
                        }
                    }
                    for (int j = 0; j < B; j++) {
                        const size_t at = first + (size_t)j * S * C + c;
                        store(out + at, mask(at, acc[j]));
                    }
                }
                if (vec == C) continue;
            }
            for (int j = 0; j < n && !inside; j++) {  // border pixels, a vector at a time
                for (int c = 0; c < vec; c += L) {
                    vf acc = {};
                    for (int a = 0; a < nh; a++) {
                        for (int i = 0; i < nw; i++) {
                            const int ow = ow_at_q0[i] + q0 + j;
                            if (ow < 0 || ow >= g.OW) continue;
                            acc += load(mrows[a] + (size_t)ow * C + c) *
                                   load(w + (size_t)(khs[a] * K + kws[i]) * C + c);
                        }
                    }
                    const size_t at = first + (size_t)j * S * C + c;
                    store(out + at, mask(at, acc));
                }
            }
            for (int j = 0; j < n; j++) {  // channels past the last full vector
                for (int c = vec; c < C; c++) {
                    float acc = 0.f;
                    for (int a = 0; a < nh; a++) {
                        for (int i = 0; i < nw; i++) {
                            const int ow = ow_at_q0[i] + q0 + j;
                            if (ow < 0 || ow >= g.OW) continue;
                            acc += mrows[a][(size_t)ow * C + c] * w[(size_t)(khs[a] * K + kws[i]) * C + c];
                        }
                    }
                    const size_t at = first + (size_t)j * S * C + c;
                    out[at] = mask(at, acc);
                }
            }
        }
    }
}

// Input rows [r0, r1). Each output row the windows need is masked (by the output's ReLU6) once, into
// a ring of K rows, as in the forward pass. Without expansion inside (weT null), gx is (H, W, C),
// masked by x's ReLU6 if x is given. With it, each row's gradient at the expansion stays in a row
// buffer and goes straight through the 1x1 convolution's transpose, weT (C, CinPad), into gx (H, W, Cin).
void backward_rows(const Geometry &g, const float *x, const float *w, const float *y, const float *gy,
                   const float *weT, int CinPad, int Cin, const unsigned char *mask, float *gx, int r0, int r1) {
    const int K = g.K, S = g.S;
    const size_t row_size = (size_t)g.W * g.C, out_row_size = (size_t)g.OW * g.C;
    RowRing ring(K, out_row_size);
    std::vector<float> row(weT ? row_size : 0);
    const float *rows[16];
    for (int ih = r0; ih < r1; ih++) {
        for (int kh = 0; kh < K; kh++) {
            const int t = ih + g.pt - kh, oh = t / S;
            rows[kh] = t < 0 || t % S || oh >= g.OH ? nullptr : ring.row(oh, [&](int i, float *slot) {
                masked_gradient(gy + i * out_row_size, y + i * out_row_size, slot, out_row_size);
            });
        }
        if (!weT && x) {
            backward_row(g, rows, FloatMask{x + ih * row_size}, w, gx + ih * row_size);
        } else if (!weT) {
            backward_row(g, rows, AllPass{}, w, gx + ih * row_size);
        } else {
            backward_row(g, rows, ByteMask{mask + ih * row_size}, w, row.data());
            gemm_rows(row.data(), g.C, g.W, weT, CinPad, nullptr, gx + (size_t)ih * g.W * Cin, Cin, g.C, Cin);
        }
    }
}

// gx[c, ih, iw] = sum over the taps (kh, kw) of a stride-S window that reached (ih, iw) of
// cols[(c*K + kh)*K + kw, oh, ow]: the overlap-add that turns per-tap gradients (one matrix product,
// done by the caller) into an image's gradient. Planar layout; rows are (c, ih) pairs. Input columns
// are taken in residue classes iw = r + S*q, which read each tap's plane at consecutive columns.
void overlap_add_rows(const Geometry &g, const float *cols, float *gx, float *scratch, int r0, int r1) {
    const int K = g.K, S = g.S, W = g.W, OW = g.OW;
    const int Q = (W + S - 1) / S;  // pixels in the widest residue class
    const float *plane[256];
    int offset[256];
    for (int row = r0; row < r1; row++) {
        const int c = row / g.H, ih = row % g.H;
        float *out = gx + (size_t)row * W;
        for (int r = 0; r < S && r < W; r++) {
            int taps = 0, qlo = 0, qhi = Q;  // [qlo, qhi): q whose every tap is inside the output
            for (int kh = 0; kh < K; kh++) {
                const int t = ih + g.pt - kh;
                if (t < 0 || t % S || t / S >= g.OH) continue;
                for (int kw = 0; kw < K; kw++) {
                    const int u = r + g.pl - kw;
                    if (((u % S) + S) % S) continue;
                    const int d = u >= 0 ? u / S : -((-u) / S);  // the output column is q + d
                    plane[taps] = cols + (((size_t)c * K + kh) * K + kw) * g.OH * OW + (size_t)(t / S) * OW;
                    offset[taps++] = d;
                    qlo = qlo > -d ? qlo : -d;
                    qhi = qhi < OW - d ? qhi : OW - d;
                }
            }
            float *sums = scratch;  // this class's values, interleaved into the row below
            const int count = (W - r + S - 1) / S;
            for (int q = 0; q < count; q++) {
                if (q >= qlo && q + L <= qhi && q + L <= count) {  // a whole vector, every tap inside
                    vf acc = {};
                    for (int i = 0; i < taps; i++) acc += load(plane[i] + q + offset[i]);
                    store(sums + q, acc);
                    q += L - 1;
                    continue;
                }
                float acc = 0.f;
                for (int i = 0; i < taps; i++) {
                    const int ow = q + offset[i];
                    if (ow >= 0 && ow < OW) acc += plane[i][q + offset[i]];
                }
                sums[q] = acc;
            }
            for (int q = 0; q < count; q++) out[r + S * q] = sums[q];
        }
    }
}

// Runs body(r0, r1) over [0, rows) in contiguous parts on `threads` OpenMP threads: PyTorch's own,
// since its libgomp is the one already loaded (a second runtime's threads would fight its spinning ones).
template <typename Body>
void parallel_rows(int rows, int threads, Body body) {
#pragma omp parallel num_threads(threads)
    {
        const int count = omp_get_num_threads(), i = omp_get_thread_num();
        const int r0 = (int)((long)rows * i / count), r1 = (int)((long)rows * (i + 1) / count);
        if (r0 < r1) body(r0, r1);
    }
}
}  // namespace

extern "C" {
// Returns 0, or 1 for a geometry it does not handle (the caller then takes PyTorch's path).
// Without expansion inside (we null): x (H, W, C), read through ReLU6 if relu_in. With it: x (H, W, Cin),
// we (Cin, C), be (C), and mask (H, W, C) bytes are written for the backward pass. w (K*K, C), b (C),
// y (OH, OW, C); per image.
int dw_forward(const float *x, int Cin, const float *we, const float *be, int relu_in, const float *w, const float *b,
               float *y, unsigned char *mask, int N, int H, int W, int C, int K, int S, int pt, int pl, int OH, int OW,
               int threads) {
    if (K < 1 || K > 16 || S < 1 || S > K || threads < 1 || (we && C % L)) return 1;
    const Geometry g{H, W, C, K, S, pt, pl, OH, OW};
    const int channels_in = we ? Cin : C;
    for (int n = 0; n < N; n++) {
        const float *xn = x + (size_t)n * H * W * channels_in;
        float *yn = y + (size_t)n * OH * OW * C;
        unsigned char *mn = we ? mask + (size_t)n * H * W * C : nullptr;
        parallel_rows(OH, threads, [&](int r0, int r1) {
            forward_rows(g, xn, Cin, we, be, relu_in && !we, w, b, yn, mn, r0, r1);
        });
    }
    return 0;
}

// Without expansion inside (weT null) gx is (H, W, C), and x the forward pass's input when it was read
// through ReLU6 (else null). With it, weT is the expansion's weight (C, CinPad), zero-padded to whole
// vectors, mask the forward pass's bytes, and gx (H, W, Cin).
int dw_backward(const float *x, const float *w, const float *y, const float *gy, const float *weT, int CinPad, int Cin,
                const unsigned char *mask, float *gx, int N, int H, int W, int C, int K, int S, int pt, int pl, int OH,
                int OW, int threads) {
    if (K < 1 || K > 16 || S < 1 || S > K || threads < 1 || (weT && CinPad % L)) return 1;
    const Geometry g{H, W, C, K, S, pt, pl, OH, OW};
    const int channels_in = weT ? Cin : C;
    for (int n = 0; n < N; n++) {
        const size_t out = (size_t)n * OH * OW * C;
        const unsigned char *mn = weT ? mask + (size_t)n * H * W * C : nullptr;
        float *gn = gx + (size_t)n * H * W * channels_in;
        const float *xn = x && !weT ? x + (size_t)n * H * W * C : nullptr;
        parallel_rows(H, threads, [&](int r0, int r1) {
            backward_rows(g, xn, w, y + out, gy + out, weT, CinPad, Cin, mn, gn, r0, r1);
        });
    }
    return 0;
}

// cols: (C*K*K, OH, OW) per image; gx: (C, H, W) per image. C*K*K <= 256, W <= 16384.
int overlap_add(const float *cols, float *gx, int N, int C, int H, int W, int K, int S, int pt, int pl, int OH, int OW,
                int threads) {
    if (K < 1 || S < 1 || C * K * K > 256 || W > 16384 || threads < 1) return 1;
    const Geometry g{H, W, C, K, S, pt, pl, OH, OW};
    for (int n = 0; n < N; n++) {
        const float *cn = cols + (size_t)n * C * K * K * OH * OW;
        float *gn = gx + (size_t)n * C * H * W;
        parallel_rows(C * H, threads, [&](int r0, int r1) {
            float scratch[16384 + L];
            overlap_add_rows(g, cn, gn, scratch, r0, r1);
        });
    }
    return 0;
}
}
