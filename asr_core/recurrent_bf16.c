/* The time loops of a GRU and an LSTM layer, the recurrent products in bfloat16 (AVX-512 BF16).
 *
 * Built on first use by asr_core/native.py with the system C compiler; without a compiler or on a
 * CPU without AVX-512 BF16 the app runs its other paths (models.gru in float32, PyTorch's LSTM).
 *
 * A recurrent layer cannot batch its time steps: each 10 ms frame costs one matrix-vector product
 * W_hh h (G*H x H; G = 3 gates for a GRU, 4 for an LSTM) plus the gates. In float32, W_hh of a
 * 320-unit GRU layer is 1.2 MB, more than the 1 MB L2 cache of this project's CPU, so every step
 * streams it from L3. As bfloat16 pairs it is 0.6 MB and stays in L2, and one vdpbf16ps
 * instruction does 32 multiply-adds (16 lanes x 2), accumulating in float32. The state h, the
 * cell c and the gates stay float32; h is rounded to bf16 only as the product's input.
 *
 * Layout of the packed weights `wp` (made by native.pack): blocks of 16 rows; inside a block, for
 * each pair of columns (2q, 2q+1), 16 uint32 words, one per row, each holding the two bf16 values
 * W[row, 2q] (low half) and W[row, 2q+1] (high half). A block accumulates its 16 outputs in one
 * register while the pair (h[2q], h[2q+1]) is broadcast to all lanes: no horizontal sums.
 *
 * The input side W_i* x of every frame comes in as bf16 (one bf16 matrix product over all frames,
 * done by PyTorch), frame t's G*H values starting at gi + t * gi_stride; `bias` (float32) is added
 * here: b_i* plus the recurrent biases that can join it (b_hr, b_hz for a GRU; all four b_h* for an
 * LSTM). Gate orders are PyTorch's: r, z, n and i, f, g, o.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

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

/* gh[k] += bf16 gi[k] + bias[k] for k < n: the input side joins the recurrent side */
static void add_input(float *gh, const uint16_t *gi, const float *bias, int n)
{
    #pragma omp simd
    for (int k = 0; k < n; k++) {
        uint32_t bits = (uint32_t)gi[k] << 16;
        float x;
        memcpy(&x, &bits, sizeof x);
        gh[k] += x + bias[k];
    }
}

static inline float sigmoid(float a)
{
    a = fminf(fmaxf(a, -80.0f), 80.0f);
    return 1.0f / (1.0f + expf(-a));   /* vectorized by gcc with glibc's libmvec expf */
}

/* GRU:  r = s(x_r + W_hr h)   z = s(x_z + W_hz h)   n = tanh(x_n + r * (W_hn h + b_hn))
 *       h' = n + z * (h - n)        (x_* = W_i* x + bias, bias = b_i* (+ b_hr, b_hz))
 * out: (T, H); scratch gh: 4H floats (3H used + H for x_n), hp: H/2 words. */
void gru_layer(int T, int H, const uint16_t *gi, int gi_stride, const float *bias, const uint32_t *wp,
               const float *b_hn, const float *h0, float *out, float *gh, uint32_t *hp)
{
    const float *h = h0;
    float *xn = gh + 3 * H;
    for (int t = 0; t < T; t++) {
        const uint16_t *g = gi + (size_t)t * gi_stride;
        float *o = out + (size_t)t * H;
        to_bf16_pairs(h, H, hp);
        matvec(wp, hp, 3 * H, H / 2, gh);
        add_input(gh, g, bias, 2 * H);            /* r and z: both sides summed */
        for (int k = 0; k < H; k++) xn[k] = 0.0f;
        add_input(xn, g + 2 * H, bias + 2 * H, H);  /* n: the input side alone */
        #pragma omp simd
        for (int k = 0; k < 2 * H; k++) gh[k] = sigmoid(gh[k]);
        #pragma omp simd
        for (int k = 0; k < H; k++) {
            float n = tanhf(xn[k] + gh[k] * (gh[2 * H + k] + b_hn[k]));
            o[k] = n + gh[H + k] * (h[k] - n);
        }
        h = o;
    }
}

/* LSTM:  c' = s(x_f + W_hf h) * c + s(x_i + W_hi h) * tanh(x_g + W_hg h)   h' = s(x_o + W_ho h) * tanh(c')
 * from a zero state; reverse != 0 runs from the last frame to the first (a bidirectional layer's
 * backward half). Frame t's h is written at out + t * out_stride, so both directions of a layer
 * share one gi and one out array. scratch gh: 4H floats, hp: H/2 words, c and h: H floats each. */
void lstm_layer(int T, int H, int reverse, const uint16_t *gi, int gi_stride, const float *bias,
                const uint32_t *wp, float *out, int out_stride, float *gh, uint32_t *hp, float *c, float *h)
{
    for (int k = 0; k < H; k++) { c[k] = 0.0f; h[k] = 0.0f; }
    for (int s = 0; s < T; s++) {
        const int t = reverse ? T - 1 - s : s;
        float *o = out + (size_t)t * out_stride;
        to_bf16_pairs(h, H, hp);
        matvec(wp, hp, 4 * H, H / 2, gh);
        add_input(gh, gi + (size_t)t * gi_stride, bias, 4 * H);
        #pragma omp simd
        for (int k = 0; k < H; k++) {
            float i = sigmoid(gh[k]), f = sigmoid(gh[H + k]), u = tanhf(gh[2 * H + k]), q = sigmoid(gh[3 * H + k]);
            c[k] = f * c[k] + i * u;
            h[k] = q * tanhf(c[k]);
            o[k] = h[k];
        }
    }
}
