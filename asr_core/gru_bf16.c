/* The time loop of a GRU layer, its recurrent product in bfloat16 (AVX-512 BF16).
 *
 * Built on first use by asr_core/native.py with the system C compiler; without a compiler or on a
 * CPU without AVX-512 BF16 the app runs models.gru (numpy, float32) instead.
 *
 * A recurrent layer cannot batch its time steps: each 10 ms frame costs one matrix-vector product
 * W_hh h (3H x H) plus the gates. In float32, W_hh of a 320-unit layer is 1.2 MB, more than the
 * 1 MB L2 cache of this project's CPU, so every step streams it from L3. As bfloat16 pairs it is
 * 0.6 MB and stays in L2, and one vdpbf16ps instruction does 32 multiply-adds (16 lanes x 2),
 * accumulating in float32. The state h and the gates stay float32; h is rounded to bf16 only as
 * the product's input.
 *
 * Layout of the packed weights `wp` (made by native.pack): blocks of 16 rows; inside a block, for
 * each pair of columns (2q, 2q+1), 16 uint32 words, one per row, each holding the two bf16 values
 * W[row, 2q] (low half) and W[row, 2q+1] (high half). A block accumulates its 16 outputs in one
 * register while the pair (h[2q], h[2q+1]) is broadcast to all lanes: no horizontal sums.
 *
 * gi holds, for every frame, the input side W_i* x + b_i* with b_hr and b_hz added (b_hn stays
 * inside r * (...)). Gate order r, z, n, as in PyTorch.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>

/* h (H floats, H a multiple of 32) -> H/2 words of bf16 pairs, rounded to nearest even */
static void to_bf16_pairs(const float *h, int H, uint32_t *hp)
{
    for (int j = 0; j < H; j += 32) {
        __m512bh b = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(h + j + 16), _mm512_loadu_ps(h + j));
        _mm512_storeu_si512((void *)(hp + j / 2), (__m512i)b);
    }
}

/* gh[0:rows] = W h, with W packed as above and h given as P = H/2 bf16 pairs (P a multiple of 4) */
static void matvec(const uint32_t *wp, const uint32_t *hp, int rows, int P, float *gh)
{
    for (int blk = 0; blk < rows; blk += 16) {
        const uint32_t *p = wp + (size_t)blk * P;
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
        __m512 a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
        for (int q = 0; q < P; q += 4) {   /* four accumulators hide the instruction's latency */
            a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_loadu_si512(p + 16 * q), (__m512bh)_mm512_set1_epi32(hp[q]));
            a1 = _mm512_dpbf16_ps(a1, (__m512bh)_mm512_loadu_si512(p + 16 * q + 16), (__m512bh)_mm512_set1_epi32(hp[q + 1]));
            a2 = _mm512_dpbf16_ps(a2, (__m512bh)_mm512_loadu_si512(p + 16 * q + 32), (__m512bh)_mm512_set1_epi32(hp[q + 2]));
            a3 = _mm512_dpbf16_ps(a3, (__m512bh)_mm512_loadu_si512(p + 16 * q + 48), (__m512bh)_mm512_set1_epi32(hp[q + 3]));
        }
        _mm512_storeu_ps(gh + blk, _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
    }
}

static inline float sigmoid(float a)
{
    a = fminf(fmaxf(a, -80.0f), 80.0f);
    return 1.0f / (1.0f + expf(-a));   /* vectorized by gcc with glibc's libmvec expf */
}

/* GRU, gates r, z, n:  r = s(gi_r + W_hr h)  z = s(gi_z + W_hz h)
 *   n = tanh(gi_n + r * (W_hn h + b_hn))   h' = n + z * (h - n)
 * out: (T, H); scratch gh: 3H floats, hp: H/2 words. */
void gru_layer(int T, int H, const float *gi, const uint32_t *wp, const float *b_hn,
               const float *h0, float *out, float *gh, uint32_t *hp)
{
    const float *h = h0;
    for (int t = 0; t < T; t++) {
        to_bf16_pairs(h, H, hp);
        matvec(wp, hp, 3 * H, H / 2, gh);
        const float *g = gi + (size_t)t * 3 * H;
        float *o = out + (size_t)t * H;
        #pragma omp simd
        for (int k = 0; k < 2 * H; k++) gh[k] = sigmoid(g[k] + gh[k]);
        #pragma omp simd
        for (int k = 0; k < H; k++) {
            float n = tanhf(g[2 * H + k] + gh[k] * (gh[2 * H + k] + b_hn[k]));
            o[k] = n + gh[H + k] * (h[k] - n);
        }
        h = o;
    }
}
