// Pre-processing of a batch of 8-bit RGB images into a model's NCHW input, on the device.
// Compiled at load by NVRTC (engines/src/gpu/prep.rs). It computes what the CPU path
// (engines/src/preprocess.rs: fast_image_resize's bilinear convolution, then crop, colour order
// and normalisation) computes: a triangle filter widened by the downscale factor, the vertical
// pass first and rounded to 8 bits, then the horizontal pass, rounded again.
//
// items: per image 8 x int64: byte offset of its pixels in `src`, iw, ih (source size),
// nw, nh (resized size), x0, y0 (crop offset in the resized image), unused.
//
// Two entry points: prep_nchw_f32 and prep_nchw_f16 (an fp16 model's input; the value is
// computed in f32 and rounded to nearest once, as a host-side conversion would).

__device__ __forceinline__ float tri(float x) {
    x = fabsf(x);
    return x < 1.0f ? 1.0f - x : 0.0f;
}

struct Taps {
    int lo, hi;      // source index range [lo, hi)
    float centre;    // in_centre - 0.5
    float inv_scale; // 1 / max(scale, 1)
    float inv_sum;   // 1 / sum of weights
};

__device__ __forceinline__ Taps taps(int out, int in_size, int out_size) {
    Taps t;
    float scale = (float)in_size / (float)out_size;
    float fscale = fmaxf(scale, 1.0f);
    float radius = fscale; // bilinear support 1.0, widened when downscaling
    float in_centre = ((float)out + 0.5f) * scale;
    t.lo = max((int)floorf(in_centre - radius), 0);
    t.hi = min((int)ceilf(in_centre + radius), in_size);
    t.centre = in_centre - 0.5f;
    t.inv_scale = 1.0f / fscale;
    float sum = 0.0f;
    for (int i = t.lo; i < t.hi; ++i) sum += tri(((float)i - t.centre) * t.inv_scale);
    t.inv_sum = sum > 0.0f ? 1.0f / sum : 0.0f;
    return t;
}

__device__ __forceinline__ float weight(const Taps& t, int i) {
    return tri(((float)i - t.centre) * t.inv_scale) * t.inv_sum;
}

__device__ __forceinline__ float to_u8(float v) {
    return fminf(fmaxf(floorf(v + 0.5f), 0.0f), 255.0f);
}

__device__ __forceinline__ void put(float* p, float v) { *p = v; }

__device__ __forceinline__ void put(unsigned short* p, float v) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
    *p = h;
}

template <typename T>
__device__ __forceinline__ void prep_nchw(
    const unsigned char* __restrict__ src, const long long* __restrict__ items,
    T* __restrict__ out, int W, int H, int n,
    float a0, float a1, float a2, float b0, float b1, float b2,
    int c0, int c1, int c2, float p0, float p1, float p2)
{
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    int b = blockIdx.z;
    if (x >= W || y >= H || b >= n) return;
    const long long* it = items + (size_t)b * 8;
    const unsigned char* img = src + it[0];
    int iw = (int)it[1], ih = (int)it[2], nw = (int)it[3], nh = (int)it[4];
    int rx = x + (int)it[5], ry = y + (int)it[6];
    size_t plane = (size_t)W * H;
    T* o = out + (size_t)b * 3 * plane + (size_t)y * W + x;
    if (rx >= nw || ry >= nh) { // letterbox padding
        put(o, p0); put(o + plane, p1); put(o + 2 * plane, p2);
        return;
    }
    Taps tx = taps(rx, iw, nw);
    Taps ty = taps(ry, ih, nh);
    float acc[3] = {0.0f, 0.0f, 0.0f};
    for (int j = tx.lo; j < tx.hi; ++j) {
        float wx = weight(tx, j);
        if (wx == 0.0f) continue;
        float col[3] = {0.0f, 0.0f, 0.0f};
        for (int i = ty.lo; i < ty.hi; ++i) {
            float wy = weight(ty, i);
            if (wy == 0.0f) continue;
            const unsigned char* p = img + ((size_t)i * iw + j) * 3;
            col[0] += wy * p[0]; col[1] += wy * p[1]; col[2] += wy * p[2];
        }
        acc[0] += wx * to_u8(col[0]); acc[1] += wx * to_u8(col[1]); acc[2] += wx * to_u8(col[2]);
    }
    float px[3] = {to_u8(acc[0]), to_u8(acc[1]), to_u8(acc[2])};
    put(o, px[c0] * a0 + b0);
    put(o + plane, px[c1] * a1 + b1);
    put(o + 2 * plane, px[c2] * a2 + b2);
}

#define PREP_ENTRY(NAME, T)                                                              \
    extern "C" __global__ void NAME(                                                     \
        const unsigned char* __restrict__ src, const long long* __restrict__ items,      \
        T* __restrict__ out, int W, int H, int n,                                        \
        float a0, float a1, float a2, float b0, float b1, float b2,                      \
        int c0, int c1, int c2, float p0, float p1, float p2)                            \
    {                                                                                    \
        prep_nchw<T>(src, items, out, W, H, n, a0, a1, a2, b0, b1, b2, c0, c1, c2, p0, p1, p2); \
    }

PREP_ENTRY(prep_nchw_f32, float)
PREP_ENTRY(prep_nchw_f16, unsigned short)
