// The depthwise step of an inverted-residual block in one pass: ReLU6 of the expansion (optional), a
// depthwise k x k convolution with zero padding, its bias, ReLU6; and its backward pass for the input
// only. fp32, channels-last (NHWC), frozen weights laid out (k*k, C). PyTorch runs these as four to six
// passes over the block's widest activation; this reads it once each way, which is what counts on a
// CPU whose time goes into moving memory. Built and loaded by dreamcore/native.py with the C++
// compiler at hand (-march=native); its threads are PyTorch's own.
// Also the overlap-add behind an image stem's input gradient (see overlap_add_rows).
#ifdef __AVX512F__
#include <immintrin.h>
#endif
#include <omp.h>
#include <cstddef>
#include <cstring>

namespace {
typedef float vf __attribute__((vector_size(64)));  // 16 lanes; GCC splits it on narrower CPUs
constexpr int L = 16;  // lanes
constexpr int B = 8;   // pixels per register block

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

// y[oh, ow, :] = relu6(b + sum_k w[k, :] * a(x[oh*S - pt + kh, ow*S - pl + kw, :])), a = relu6 or identity
template <bool RELU_IN>
void forward_rows(const Geometry &g, const float *x, const float *w, const float *b, float *y, int r0, int r1) {
    const int C = g.C, K = g.K, S = g.S, W = g.W, vec = C / L * L;
    for (int oh = r0; oh < r1; oh++) {
        const int top = oh * S - g.pt;
        const int kh0 = top < 0 ? -top : 0, kh1 = top + K > g.H ? g.H - top : K;
        for (int ow0 = 0; ow0 < g.OW; ow0 += B) {
            const int n = g.OW - ow0 < B ? g.OW - ow0 : B;
            const int left = ow0 * S - g.pl;
            float *out = y + ((size_t)oh * g.OW + ow0) * C;
            const bool inside = n == B && left >= 0 && left + (B - 1) * S + K <= W;
            if (inside) {  // every tap inside: no checks
                const float *base = x + ((size_t)top * W + left) * C;
                for (int c = 0; c < vec; c += L) {
                    vf acc[B];
                    for (int j = 0; j < B; j++) acc[j] = load(b + c);
                    for (int kh = kh0; kh < kh1; kh++) {
                        for (int kw = 0; kw < K; kw++) {
                            const vf wv = load(w + (size_t)(kh * K + kw) * C + c);
                            const float *p = base + ((size_t)kh * W + kw) * C + c;
                            for (int j = 0; j < B; j++) {
                                const vf v = load(p + (size_t)j * S * C);
                                acc[j] += (RELU_IN ? relu6(v) : v) * wv;
                            }
                        }
                    }
                    for (int j = 0; j < B; j++) store(out + (size_t)j * C + c, relu6(acc[j]));
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
                            const vf v = load(x + ((size_t)(top + kh) * W + iw) * C + c);
                            acc += (RELU_IN ? relu6(v) : v) * load(w + (size_t)(kh * K + kw) * C + c);
                        }
                    }
                    store(out + (size_t)j * C + c, relu6(acc));
                }
            }
            for (int j = 0; j < n; j++) {  // channels past the last full vector
                for (int c = vec; c < C; c++) {
                    float acc = b[c];
                    for (int kh = kh0; kh < kh1; kh++) {
                        for (int kw = 0; kw < K; kw++) {
                            const int iw = left + j * S + kw;
                            if (iw < 0 || iw >= W) continue;
                            const float v = x[((size_t)(top + kh) * W + iw) * C + c];
                            acc += (RELU_IN ? relu6(v) : v) * w[(size_t)(kh * K + kw) * C + c];
                        }
                    }
                    out[(size_t)j * C + c] = relu6(acc);
                }
            }
        }
    }
}

// m = gy where the output's ReLU6 passed gradient (0 < y < 6), else 0
void mask_rows(const Geometry &g, const float *gy, const float *y, float *m, int r0, int r1) {
    const size_t start = (size_t)r0 * g.OW * g.C, end = (size_t)r1 * g.OW * g.C;
    for (size_t i = start; i < end; i++) m[i] = passes(y[i], gy[i]);
}

// gx[ih, iw, :] = a'(x) * sum over the taps that reached (ih, iw) of w[k, :] * m[oh, ow, :].
// Input columns are taken in residue classes iw = r + S*q: within one, every pixel is reached by the
// same kernel columns kw, at consecutive output columns.
template <bool RELU_IN>
void backward_rows(const Geometry &g, const float *x, const float *w, const float *m, float *gx, int r0, int r1) {
    const int C = g.C, K = g.K, S = g.S, W = g.W, vec = C / L * L;
    int khs[16], ohs[16], kws[16], ow_at_q0[16];  // K <= 16, checked on entry
    for (int ih = r0; ih < r1; ih++) {
        int nh = 0;
        for (int kh = 0; kh < K; kh++) {
            const int t = ih + g.pt - kh;
            if (t >= 0 && t % S == 0 && t / S < g.OH) khs[nh] = kh, ohs[nh++] = t / S;
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
                for (int i = 0; i < nw && inside; i++)
                    inside = ow_at_q0[i] + q0 >= 0 && ow_at_q0[i] + q0 + B <= g.OW;
                const size_t first = ((size_t)ih * W + r + (size_t)S * q0) * C;
                if (inside) {
                    for (int c = 0; c < vec; c += L) {
                        vf acc[B] = {};
                        for (int a = 0; a < nh; a++) {
                            for (int i = 0; i < nw; i++) {
                                const vf wv = load(w + (size_t)(khs[a] * K + kws[i]) * C + c);
                                const float *p = m + ((size_t)ohs[a] * g.OW + ow_at_q0[i] + q0) * C + c;
                                for (int j = 0; j < B; j++) acc[j] += load(p + (size_t)j * C) * wv;
                            }
                        }
                        for (int j = 0; j < B; j++) {
                            const size_t at = first + (size_t)j * S * C + c;
                            store(gx + at, RELU_IN ? passes(load(x + at), acc[j]) : acc[j]);
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
                                acc += load(m + ((size_t)ohs[a] * g.OW + ow) * C + c) *
                                       load(w + (size_t)(khs[a] * K + kws[i]) * C + c);
                            }
                        }
                        const size_t at = first + (size_t)j * S * C + c;
                        store(gx + at, RELU_IN ? passes(load(x + at), acc) : acc);
                    }
                }
                for (int j = 0; j < n; j++) {  // channels past the last full vector
                    for (int c = vec; c < C; c++) {
                        float acc = 0.f;
                        for (int a = 0; a < nh; a++) {
                            for (int i = 0; i < nw; i++) {
                                const int ow = ow_at_q0[i] + q0 + j;
                                if (ow < 0 || ow >= g.OW) continue;
                                acc += m[((size_t)ohs[a] * g.OW + ow) * C + c] * w[(size_t)(khs[a] * K + kws[i]) * C + c];
                            }
                        }
                        const size_t at = first + (size_t)j * S * C + c;
                        gx[at] = RELU_IN ? passes(x[at], acc) : acc;
                    }
                }
            }
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
int dw_forward(const float *x, const float *w, const float *b, float *y, int N, int H, int W, int C, int K, int S,
               int pt, int pl, int OH, int OW, int relu_in, int threads) {
    if (K < 1 || K > 16 || S < 1 || S > K || threads < 1) return 1;
    const Geometry g{H, W, C, K, S, pt, pl, OH, OW};
    for (int n = 0; n < N; n++) {
        const float *xn = x + (size_t)n * H * W * C;
        float *yn = y + (size_t)n * OH * OW * C;
        parallel_rows(OH, threads, [&](int r0, int r1) {
            relu_in ? forward_rows<true>(g, xn, w, b, yn, r0, r1) : forward_rows<false>(g, xn, w, b, yn, r0, r1);
        });
    }
    return 0;
}

// m: scratch of y's size. x is read only with relu_in (for the mask of the input's ReLU6).
int dw_backward(const float *x, const float *w, const float *y, const float *gy, float *m, float *gx, int N, int H,
                int W, int C, int K, int S, int pt, int pl, int OH, int OW, int relu_in, int threads) {
    if (K < 1 || K > 16 || S < 1 || S > K || threads < 1) return 1;
    const Geometry g{H, W, C, K, S, pt, pl, OH, OW};
    for (int n = 0; n < N; n++) {
        const size_t in = (size_t)n * H * W * C, out = (size_t)n * OH * OW * C;
        parallel_rows(OH, threads, [&](int r0, int r1) { mask_rows(g, gy + out, y + out, m + out, r0, r1); });
        parallel_rows(H, threads, [&](int r0, int r1) {
            relu_in ? backward_rows<true>(g, x + in, w, m + out, gx + in, r0, r1)
                    : backward_rows<false>(g, x + in, w, m + out, gx + in, r0, r1);
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
