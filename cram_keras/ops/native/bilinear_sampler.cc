// Fused bilinear sampling at pixel coordinates for TensorFlow on the CPU:
// the optional fast path of cram_keras.ops.pixel_sampler.sample_pixels.
//
// The same arithmetic as the keras.ops reference (pixel_sampler.py): pixel
// centres at integer coordinates; coordinates clamped to [-2, size + 1]
// ("zeros") or [0, size - 1] ("border"), NaN to the lower bound; a corner
// outside the image reads 0; interpolation written as lerps, so a zero
// fraction returns the corner value exactly. One pass over the output per
// direction, as torch's grid_sample kernels do.
//
// CramSampleAtPixels:     images (B, H, W, C), x, y -> (B, h, w, C)
// CramSampleAtPixelsGrad: images, x, y, upstream (B, h, w, C)
//                         -> grad_images (B, H, W, C), grad_x, grad_y
//
// CramTransformSample:     images, params (B, P) -> (B, h, w, C)
// CramTransformSampleGrad: images, params, upstream
//                          -> grad_images, grad_params (B, P)
// The same sampling at the pixel coordinates of an affine map (the
// SpatialTransformer's "affine", "attention" and "anisotropic" parameters,
// cram_keras.ops.sampling): the op computes the coordinates itself and
// sums their gradient into the parameters', so that one call of the layer
// is one op each way.
//
// x and y are (B, h, w), or broadcast to it along the output rows or columns:
// (B, 1, w) and (B, h, 1) for an axis-aligned map, where x depends on the
// column only and y on the row only. Their gradients have their own shapes.
//
// The forward pass is split over output rows, the backward pass over images
// (each image's gradient is written by one thread only: no atomics).
//
// On x86-64 CPUs with AVX-512 both passes run 16 output pixels at a time,
// on those with AVX2 only 8 (chosen at run time, VectorIsa(); other CPUs run
// the scalar loops): the same operations in the same order per pixel, with
// masked gathers for the corners and no fused multiply-adds (built with
// -ffp-contract=off), so the values are the scalar loops' bit for bit. The backward pass still adds the pixels'
// contributions to the image gradient one pixel at a time, in the scalar
// order (for one channel the left and right corners as one 64-bit addition:
// the same two sums).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#include <immintrin.h>
#define CRAM_SAMPLER_X86 1
#define CRAM_TARGET_AVX512 \
  __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl")))
#define CRAM_TARGET_AVX2 __attribute__((target("avx2")))
#endif

namespace {

using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::TensorShape;
using tensorflow::shape_inference::DimensionHandle;
using tensorflow::shape_inference::InferenceContext;
using tensorflow::shape_inference::ShapeHandle;

// One output dimension from the coordinates' dimensions a and b, which are
// equal or one of them is 1 (broadcast).
absl::Status BroadcastDim(InferenceContext* c, DimensionHandle a,
                          DimensionHandle b, DimensionHandle* out) {
  if (c->ValueKnown(a) && c->Value(a) == 1) {
    *out = b;
    return absl::OkStatus();
  }
  if (c->ValueKnown(b) && c->Value(b) == 1) {
    *out = a;
    return absl::OkStatus();
  }
  if (!c->ValueKnown(a) || !c->ValueKnown(b)) {
    *out = c->UnknownDim();
    return absl::OkStatus();
  }
  return c->Merge(a, b, out);
}

absl::Status SampleShape(InferenceContext* c) {
  ShapeHandle images, x, y;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &images));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 3, &x));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 3, &y));
  DimensionHandle batch, out_h, out_w;
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(images, 0), c->Dim(x, 0), &batch));
  TF_RETURN_IF_ERROR(c->Merge(batch, c->Dim(y, 0), &batch));
  TF_RETURN_IF_ERROR(BroadcastDim(c, c->Dim(x, 1), c->Dim(y, 1), &out_h));
  TF_RETURN_IF_ERROR(BroadcastDim(c, c->Dim(x, 2), c->Dim(y, 2), &out_w));
  c->set_output(0, c->MakeShape({batch, out_h, out_w, c->Dim(images, 3)}));
  return absl::OkStatus();
}

absl::Status SampleGradShape(InferenceContext* c) {
  ShapeHandle images, x, y;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &images));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 3, &x));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 3, &y));
  c->set_output(0, images);
  c->set_output(1, x);
  c->set_output(2, y);
  return absl::OkStatus();
}

absl::Status TransformSampleShape(InferenceContext* c) {
  ShapeHandle images, params;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &images));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &params));
  DimensionHandle batch;
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(images, 0), c->Dim(params, 0), &batch));
  int64_t out_h, out_w;
  TF_RETURN_IF_ERROR(c->GetAttr("output_height", &out_h));
  TF_RETURN_IF_ERROR(c->GetAttr("output_width", &out_w));
  c->set_output(0, c->MakeShape({batch, out_h, out_w, c->Dim(images, 3)}));
  return absl::OkStatus();
}

absl::Status TransformSampleGradShape(InferenceContext* c) {
  ShapeHandle images, params;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &images));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &params));
  c->set_output(0, images);
  c->set_output(1, params);
  return absl::OkStatus();
}

}  // namespace

REGISTER_OP("CramSampleAtPixels")
    .Input("images: float")
    .Input("x: float")
    .Input("y: float")
    .Output("output: float")
    .Attr("padding: {'zeros', 'border'}")
    .SetShapeFn(SampleShape);

REGISTER_OP("CramSampleAtPixelsGrad")
    .Input("images: float")
    .Input("x: float")
    .Input("y: float")
    .Input("upstream: float")
    .Output("grad_images: float")
    .Output("grad_x: float")
    .Output("grad_y: float")
    .Attr("padding: {'zeros', 'border'}")
    .SetShapeFn(SampleGradShape);

REGISTER_OP("CramTransformSample")
    .Input("images: float")
    .Input("params: float")
    .Output("output: float")
    .Attr("transform: {'affine', 'attention', 'anisotropic'}")
    .Attr("output_height: int >= 1")
    .Attr("output_width: int >= 1")
    .Attr("padding: {'zeros', 'border'}")
    .Attr("align_corners: bool = false")
    .SetShapeFn(TransformSampleShape);

REGISTER_OP("CramTransformSampleGrad")
    .Input("images: float")
    .Input("params: float")
    .Input("upstream: float")
    .Output("grad_images: float")
    .Output("grad_params: float")
    .Attr("transform: {'affine', 'attention', 'anisotropic'}")
    .Attr("output_height: int >= 1")
    .Attr("output_width: int >= 1")
    .Attr("padding: {'zeros', 'border'}")
    .Attr("align_corners: bool = false")
    .SetShapeFn(TransformSampleGradShape);

namespace {

inline void Split(float coordinate, int64_t size, bool zeros, int64_t* lower,
                  float* fraction) {
  const float low = zeros ? -2.0f : 0.0f;
  const float high = zeros ? static_cast<float>(size) + 1.0f
                           : static_cast<float>(size) - 1.0f;
  // Comparisons instead of fmin / fmax / isnan / floor: no library calls in
  // the inner loop on a baseline x86-64 build. NaN fails every comparison,
  // so it goes to `low` like the keras.ops path's where(isnan, low, ...).
  float c = coordinate > low ? coordinate : low;  // NaN -> low
  c = c < high ? c : high;
  // floor of a value in [-2, size + 1]: truncate, then step down for
  // negative non-integers (exact for |c| < 2^23).
  int64_t whole = static_cast<int64_t>(c);
  if (static_cast<float>(whole) > c) --whole;
  *fraction = c - static_cast<float>(whole);
  *lower = whole;
}

// One output pixel's four corners in an image of height x width x channels:
// the fractions, the offsets of the top-left corner's row and of the row
// below (offsets, not pointers: a corner outside the image is never read,
// and no pointer is formed outside the tensor), and which corners lie inside.
struct Corners {
  float fx, fy;
  int64_t r0, r1;
  bool in00, in01, in10, in11;
};

inline Corners Locate(float x, float y, int64_t width, int64_t height,
                      int64_t channels, bool zeros) {
  Corners k;
  int64_t x0, y0;
  Split(x, width, zeros, &x0, &k.fx);
  Split(y, height, zeros, &y0, &k.fy);
  const bool in_x0 = x0 >= 0 && x0 < width;
  const bool in_x1 = x0 + 1 >= 0 && x0 + 1 < width;
  const bool in_y0 = y0 >= 0 && y0 < height;
  const bool in_y1 = y0 + 1 >= 0 && y0 + 1 < height;
  k.r0 = (y0 * width + x0) * channels;
  k.r1 = k.r0 + width * channels;
  k.in00 = in_y0 && in_x0;
  k.in01 = in_y0 && in_x1;
  k.in10 = in_y1 && in_x0;
  k.in11 = in_y1 && in_x1;
  return k;
}

// The four corners' values of channel `c` of one output pixel (0 where a
// corner lies outside the image).
struct CornerValues {
  float v00, v01, v10, v11;
};

inline CornerValues ReadCorners(const Corners& k, const float* image,
                                int64_t channels, int64_t c) {
  return {k.in00 ? image[k.r0 + c] : 0.0f,
          k.in01 ? image[k.r0 + channels + c] : 0.0f,
          k.in10 ? image[k.r1 + c] : 0.0f,
          k.in11 ? image[k.r1 + channels + c] : 0.0f};
}

// Sizes of one call, and the strides that broadcast x and y.
struct Geometry {
  int64_t batch, height, width, channels, out_h, out_w;
  int64_t x_size, x_row, x_col;  // per image; steps per output row, column
  int64_t y_size, y_row, y_col;
};

#ifdef CRAM_SAMPLER_X86

// The widest loops this CPU (and its operating system) runs: AVX-512, else
// AVX2, else the scalar loops. CRAM_KERAS_SAMPLER_ISA ("avx512", "avx2" or
// "scalar") sets the widest allowed, to check the narrower loops on a CPU
// that has the wider ones; cram_keras.ops.native_sampler checks its value
// before loading the library. Read once per process.
enum class Isa { kScalar, kAvx2, kAvx512 };

Isa VectorIsa() {
  static const Isa isa = [] {
    const char* setting = std::getenv("CRAM_KERAS_SAMPLER_ISA");
    const std::string limit = setting == nullptr ? "avx512" : setting;
    const bool avx512 = __builtin_cpu_supports("avx512f") &&
                        __builtin_cpu_supports("avx512dq") &&
                        __builtin_cpu_supports("avx512bw") &&
                        __builtin_cpu_supports("avx512vl");
    const bool avx2 = __builtin_cpu_supports("avx2");
    if (limit == "avx512" && avx512) return Isa::kAvx512;
    if ((limit == "avx512" || limit == "avx2") && avx2) return Isa::kAvx2;
    return Isa::kScalar;
  }();
  return isa;
}

// Whether the vector loops' 32-bit offsets cover one image (and one image's
// output row): always, short of images of 2^30 values.
bool FitsInt32(const Geometry& g) {
  const int64_t limit = int64_t{1} << 30;
  return g.height < limit && g.width < limit &&
         (g.height + 3) * (g.width + 3) * std::max<int64_t>(g.channels, 1) <
             limit &&
         g.out_w * std::max<int64_t>(g.channels, 1) < limit;
}

// Split() for 16 coordinates: the same comparisons, truncation and step.
CRAM_TARGET_AVX512 inline void SplitV(__m512 coordinate, __m512 low,
                                      __m512 high, __m512i* lower,
                                      __m512* fraction) {
  __m512 c = _mm512_mask_blend_ps(
      _mm512_cmp_ps_mask(coordinate, low, _CMP_GT_OQ), low, coordinate);
  c = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(c, high, _CMP_LT_OQ), high, c);
  __m512i whole = _mm512_cvttps_epi32(c);
  const __mmask16 above =
      _mm512_cmp_ps_mask(_mm512_cvtepi32_ps(whole), c, _CMP_GT_OQ);
  whole = _mm512_mask_sub_epi32(whole, above, whole, _mm512_set1_epi32(1));
  *fraction = _mm512_sub_ps(c, _mm512_cvtepi32_ps(whole));
  *lower = whole;
}

// Locate() for 16 output pixels; `lanes` masks the pixels that exist.
struct CornersV {
  __m512 fx, fy;
  __m512i r0, r1;
  __mmask16 in00, in01, in10, in11;
};

struct Bounds {
  __m512 low, high_x, high_y;
  __m512i width, height, channels, row;
  __m512i lane_offsets;  // of 16 neighbouring pixels' values in a row
};

CRAM_TARGET_AVX512 inline Bounds MakeBounds(const Geometry& g, bool zeros) {
  Bounds d;
  d.low = _mm512_set1_ps(zeros ? -2.0f : 0.0f);
  d.high_x = _mm512_set1_ps(zeros ? static_cast<float>(g.width) + 1.0f
                                  : static_cast<float>(g.width) - 1.0f);
  d.high_y = _mm512_set1_ps(zeros ? static_cast<float>(g.height) + 1.0f
                                  : static_cast<float>(g.height) - 1.0f);
  d.width = _mm512_set1_epi32(static_cast<int32_t>(g.width));
  d.height = _mm512_set1_epi32(static_cast<int32_t>(g.height));
  d.channels = _mm512_set1_epi32(static_cast<int32_t>(g.channels));
  d.row = _mm512_set1_epi32(static_cast<int32_t>(g.width * g.channels));
  d.lane_offsets = _mm512_mullo_epi32(
      _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
      d.channels);
  return d;
}

CRAM_TARGET_AVX512 inline __mmask16 Inside(__m512i v, __m512i size) {
  return _mm512_cmpge_epi32_mask(v, _mm512_setzero_si512()) &
         _mm512_cmplt_epi32_mask(v, size);
}

CRAM_TARGET_AVX512 inline CornersV LocateV(__m512 x, __m512 y,
                                           const Bounds& d, __mmask16 lanes) {
  CornersV k;
  __m512i x0, y0;
  SplitV(x, d.low, d.high_x, &x0, &k.fx);
  SplitV(y, d.low, d.high_y, &y0, &k.fy);
  const __m512i one = _mm512_set1_epi32(1);
  const __mmask16 in_x0 = Inside(x0, d.width);
  const __mmask16 in_x1 = Inside(_mm512_add_epi32(x0, one), d.width);
  const __mmask16 in_y0 = Inside(y0, d.height) & lanes;
  const __mmask16 in_y1 = Inside(_mm512_add_epi32(y0, one), d.height) & lanes;
  k.r0 = _mm512_mullo_epi32(
      _mm512_add_epi32(_mm512_mullo_epi32(y0, d.width), x0), d.channels);
  k.r1 = _mm512_add_epi32(k.r0, d.row);
  k.in00 = in_y0 & in_x0;
  k.in01 = in_y0 & in_x1;
  k.in10 = in_y1 & in_x0;
  k.in11 = in_y1 & in_x1;
  return k;
}

// 16 coordinates of one output row from column j on: contiguous, or one
// value broadcast along the row.
CRAM_TARGET_AVX512 inline __m512 LoadCoordinates(const float* row,
                                                 int64_t col_step, int64_t j,
                                                 __mmask16 lanes) {
  return col_step == 0 ? _mm512_set1_ps(row[0])
                       : _mm512_maskz_loadu_ps(lanes, row + j);
}

CRAM_TARGET_AVX512 inline __m512 Gather(__mmask16 mask, __m512i index,
                                        const float* base) {
  return _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mask, index, base, 4);
}

// The four corners' values of channel `c` of 16 output pixels (0 where a
// corner lies outside the image or its pixel outside the lanes).
struct CornerValuesV {
  __m512 v00, v01, v10, v11;
};

CRAM_TARGET_AVX512 inline CornerValuesV GatherCorners(const CornersV& k,
                                                      const Bounds& d,
                                                      int64_t c,
                                                      const float* image) {
  const __m512i cc = _mm512_set1_epi32(static_cast<int32_t>(c));
  const __m512i i00 = _mm512_add_epi32(k.r0, cc);
  const __m512i i10 = _mm512_add_epi32(k.r1, cc);
  return {Gather(k.in00, i00, image),
          Gather(k.in01, _mm512_add_epi32(i00, d.channels), image),
          Gather(k.in10, i10, image),
          Gather(k.in11, _mm512_add_epi32(i10, d.channels), image)};
}

CRAM_TARGET_AVX512 inline __mmask16 TailMask(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF)
                 : static_cast<__mmask16>((1u << n) - 1u);
}

// The forward pass over output rows [start, limit) of all images.
CRAM_TARGET_AVX512 void ForwardRowsAvx512(const Geometry& g, bool zeros,
                                          const float* image_data,
                                          const float* x_data,
                                          const float* y_data, float* out,
                                          int64_t start, int64_t limit) {
  const int64_t channels = g.channels, out_h = g.out_h, out_w = g.out_w;
  const int64_t image_size = g.height * g.width * channels;
  const Bounds d = MakeBounds(g, zeros);
  for (int64_t row = start; row < limit; ++row) {
    const int64_t b = row / out_h, i = row % out_h;
    const float* image = image_data + b * image_size;
    const float* x_row = x_data + b * g.x_size + i * g.x_row;
    const float* y_row = y_data + b * g.y_size + i * g.y_row;
    float* o_row = out + row * out_w * channels;
    for (int64_t j = 0; j < out_w; j += 16) {
      const __mmask16 lanes = TailMask(out_w - j);
      const CornersV k =
          LocateV(LoadCoordinates(x_row, g.x_col, j, lanes),
                  LoadCoordinates(y_row, g.y_col, j, lanes), d, lanes);
      for (int64_t c = 0; c < channels; ++c) {
        const auto [v00, v01, v10, v11] = GatherCorners(k, d, c, image);
        const __m512 top =
            _mm512_add_ps(v00, _mm512_mul_ps(k.fx, _mm512_sub_ps(v01, v00)));
        const __m512 dy = _mm512_sub_ps(
            _mm512_add_ps(v10, _mm512_mul_ps(k.fx, _mm512_sub_ps(v11, v10))),
            top);
        const __m512 value = _mm512_add_ps(top, _mm512_mul_ps(k.fy, dy));
        float* o = o_row + j * channels;
        if (channels == 1) {
          _mm512_mask_storeu_ps(o, lanes, value);
        } else {
          _mm512_mask_i32scatter_ps(o + c, lanes, d.lane_offsets, value, 4);
        }
      }
    }
  }
}

// Interleaves the 16 lanes of `left` and `right`: out[2l] = left[l],
// out[2l + 1] = right[l].
CRAM_TARGET_AVX512 inline void Interleave(const float* left,
                                          const float* right, float* out) {
  const __m512i first = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20,
                                          5, 21, 6, 22, 7, 23);
  const __m512i second = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12,
                                           28, 13, 29, 14, 30, 15, 31);
  const __m512 l = _mm512_loadu_ps(left), r = _mm512_loadu_ps(right);
  _mm512_storeu_ps(out, _mm512_permutex2var_ps(l, first, r));
  _mm512_storeu_ps(out + 16, _mm512_permutex2var_ps(l, second, r));
}

// target[0..1] += pair[0..1] as one 64-bit addition (two separate float
// additions, the same as one at a time). SSE2: every x86-64 CPU has it.
inline void AddPair(float* target, const float* pair) {
  const __m128 sum = _mm_add_ps(
      _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(target))),
      _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(pair))));
  _mm_store_sd(reinterpret_cast<double*>(target), _mm_castps_pd(sum));
}

// The backward pass for images [start, limit): the per-pixel arithmetic 16
// pixels at a time; the additions into the image and coordinate gradients
// one pixel at a time in the scalar loops' order (same sums, bit for bit).
CRAM_TARGET_AVX512 void BackwardImagesAvx512(
    const Geometry& g, bool zeros, const float* image_data,
    const float* x_data, const float* y_data, const float* up_data,
    float* gi_data, float* gx_data, float* gy_data, int64_t start,
    int64_t limit) {
  const int64_t height = g.height, width = g.width, channels = g.channels,
                out_h = g.out_h, out_w = g.out_w;
  const int64_t image_size = height * width * channels;
  const int64_t pixels = out_h * out_w;
  const Bounds d = MakeBounds(g, zeros);
  const __m512 zero = _mm512_setzero_ps();
  const __m512 x_max = _mm512_set1_ps(static_cast<float>(width) - 1.0f);
  const __m512 y_max = _mm512_set1_ps(static_cast<float>(height) - 1.0f);
  // Per channel and lane: the four corners' contributions.
  std::vector<float> parts(static_cast<size_t>(4 * 16 * std::max<int64_t>(channels, 1)));
  float* a00 = parts.data();
  float* a01 = a00 + 16 * channels;
  float* a10 = a01 + 16 * channels;
  float* a11 = a10 + 16 * channels;
  alignas(64) int32_t r0s[16], r1s[16];
  alignas(64) float sxs[16], sys[16];
  const bool x_full = g.x_row != 0 && g.x_col != 0;
  const bool y_full = g.y_row != 0 && g.y_col != 0;
  for (int64_t b = start; b < limit; ++b) {
    const float* image = image_data + b * image_size;
    float* grad_image = gi_data + b * image_size;
    std::memset(grad_image, 0, sizeof(float) * image_size);
    float* gx_image = gx_data + b * g.x_size;
    float* gy_image = gy_data + b * g.y_size;
    std::memset(gx_image, 0, sizeof(float) * g.x_size);
    std::memset(gy_image, 0, sizeof(float) * g.y_size);
    const float* x_image = x_data + b * g.x_size;
    const float* y_image = y_data + b * g.y_size;
    for (int64_t i = 0; i < out_h; ++i) {
      const float* x_row = x_image + i * g.x_row;
      const float* y_row = y_image + i * g.y_row;
      const float* u_row = up_data + (b * pixels + i * out_w) * channels;
      for (int64_t j = 0; j < out_w; j += 16) {
        const int64_t n = std::min<int64_t>(16, out_w - j);
        const __mmask16 lanes = TailMask(n);
        const __m512 xo = LoadCoordinates(x_row, g.x_col, j, lanes);
        const __m512 yo = LoadCoordinates(y_row, g.y_col, j, lanes);
        const CornersV k = LocateV(xo, yo, d, lanes);
        __m512 slope_x = zero, slope_y = zero;
        const float* u_base = u_row + j * channels;
        for (int64_t c = 0; c < channels; ++c) {
          const __m512 u =
              channels == 1
                  ? _mm512_maskz_loadu_ps(lanes, u_base)
                  : _mm512_mask_i32gather_ps(zero, lanes, d.lane_offsets,
                                             u_base + c, 4);
          const auto [v00, v01, v10, v11] = GatherCorners(k, d, c, image);
          const __m512 dx_top = _mm512_sub_ps(v01, v00);
          const __m512 dx_bottom = _mm512_sub_ps(v11, v10);
          const __m512 top = _mm512_add_ps(v00, _mm512_mul_ps(k.fx, dx_top));
          const __m512 dy = _mm512_sub_ps(
              _mm512_add_ps(v10, _mm512_mul_ps(k.fx, dx_bottom)), top);
          slope_x = _mm512_add_ps(
              slope_x,
              _mm512_mul_ps(u, _mm512_add_ps(
                                   dx_top, _mm512_mul_ps(
                                               k.fy, _mm512_sub_ps(dx_bottom,
                                                                   dx_top)))));
          slope_y = _mm512_add_ps(slope_y, _mm512_mul_ps(u, dy));
          const __m512 up_bottom = _mm512_mul_ps(u, k.fy);
          const __m512 up_top = _mm512_sub_ps(u, up_bottom);
          const __m512 up_01 = _mm512_mul_ps(up_top, k.fx);
          const __m512 up_11 = _mm512_mul_ps(up_bottom, k.fx);
          _mm512_storeu_ps(a00 + 16 * c, _mm512_sub_ps(up_top, up_01));
          _mm512_storeu_ps(a01 + 16 * c, up_01);
          _mm512_storeu_ps(a10 + 16 * c, _mm512_sub_ps(up_bottom, up_11));
          _mm512_storeu_ps(a11 + 16 * c, up_11);
        }
        if (!zeros) {
          // Border padding: the clamped region and the border itself have
          // zero slope (as torch).
          const __mmask16 live_x = _mm512_cmp_ps_mask(xo, zero, _CMP_GT_OQ) &
                                   _mm512_cmp_ps_mask(xo, x_max, _CMP_LT_OQ);
          const __mmask16 live_y = _mm512_cmp_ps_mask(yo, zero, _CMP_GT_OQ) &
                                   _mm512_cmp_ps_mask(yo, y_max, _CMP_LT_OQ);
          slope_x = _mm512_maskz_mov_ps(live_x, slope_x);
          slope_y = _mm512_maskz_mov_ps(live_y, slope_y);
        }
        _mm512_store_si512(r0s, k.r0);
        _mm512_store_si512(r1s, k.r1);
        _mm512_store_ps(sxs, slope_x);
        _mm512_store_ps(sys, slope_y);
        const unsigned m00 = k.in00, m01 = k.in01, m10 = k.in10, m11 = k.in11;
        if (channels == 1) {
          // The left and right corners of a row are neighbours in memory:
          // one 64-bit addition for both, in the same order per pixel.
          alignas(64) float top[32], bottom[32];
          Interleave(a00, a01, top);
          Interleave(a10, a11, bottom);
          const unsigned both_top = m00 & m01, both_bottom = m10 & m11;
          for (int64_t l = 0; l < n; ++l) {
            const unsigned bit = 1u << l;
            float* t0 = grad_image + r0s[l];
            float* t1 = grad_image + r1s[l];
            if (both_top & bit) {
              AddPair(t0, top + 2 * l);
            } else {
              if (m00 & bit) t0[0] += top[2 * l];
              if (m01 & bit) t0[1] += top[2 * l + 1];
            }
            if (both_bottom & bit) {
              AddPair(t1, bottom + 2 * l);
            } else {
              if (m10 & bit) t1[0] += bottom[2 * l];
              if (m11 & bit) t1[1] += bottom[2 * l + 1];
            }
          }
        } else {
          for (int64_t l = 0; l < n; ++l) {
            const unsigned bit = 1u << l;
            float* t0 = grad_image + r0s[l];
            float* t1 = grad_image + r1s[l];
            for (int64_t c = 0; c < channels; ++c) {
              if (m00 & bit) t0[c] += a00[16 * c + l];
              if (m01 & bit) t0[channels + c] += a01[16 * c + l];
              if (m10 & bit) t1[c] += a10[16 * c + l];
              if (m11 & bit) t1[channels + c] += a11[16 * c + l];
            }
          }
        }
        if (!x_full || !y_full) {
          for (int64_t l = 0; l < n; ++l) {
            if (!x_full) gx_image[i * g.x_row + (j + l) * g.x_col] += sxs[l];
            if (!y_full) gy_image[i * g.y_row + (j + l) * g.y_col] += sys[l];
          }
        }
        // One coordinate per output pixel: its gradient is written once.
        if (x_full) {
          float* gx = gx_image + i * g.x_row + j;
          _mm512_mask_storeu_ps(
              gx, lanes, _mm512_add_ps(_mm512_maskz_loadu_ps(lanes, gx), slope_x));
        }
        if (y_full) {
          float* gy = gy_image + i * g.y_row + j;
          _mm512_mask_storeu_ps(
              gy, lanes, _mm512_add_ps(_mm512_maskz_loadu_ps(lanes, gy), slope_y));
        }
      }
    }
  }
}

// The sums over one output row that the affine map's parameter gradient
// needs: of u * across_x, of u, of v * across_y and of v (16 lanes of
// partial sums each).
CRAM_TARGET_AVX512 void RowSumsAvx512(const float* u, const float* v,
                                      const float* across_x,
                                      const float* across_y, int64_t n,
                                      double sums[4]) {
  __m512 ua = _mm512_setzero_ps(), us = ua, va = ua, vs = ua;
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 lanes = TailMask(n - j);
    const __m512 uj = _mm512_maskz_loadu_ps(lanes, u + j);
    const __m512 vj = _mm512_maskz_loadu_ps(lanes, v + j);
    ua = _mm512_add_ps(ua, _mm512_mul_ps(uj, _mm512_maskz_loadu_ps(lanes, across_x + j)));
    us = _mm512_add_ps(us, uj);
    va = _mm512_add_ps(va, _mm512_mul_ps(vj, _mm512_maskz_loadu_ps(lanes, across_y + j)));
    vs = _mm512_add_ps(vs, vj);
  }
  sums[0] = _mm512_reduce_add_ps(ua);
  sums[1] = _mm512_reduce_add_ps(us);
  sums[2] = _mm512_reduce_add_ps(va);
  sums[3] = _mm512_reduce_add_ps(vs);
}

// === The AVX2 loops: 8 output pixels at a time ===
//
// For x86-64 CPUs with AVX2 but not AVX-512 (AMD Zen 1-3, Intel before
// Skylake-SP, and the newer Intel client CPUs): the AVX-512 loops' operations
// in the same order, with AVX2's masked gathers and loads, its masks held as
// vectors of all-ones or zero lanes, and the stores the AVX-512 loops scatter
// written one value at a time. No fused multiply-adds (the target has no
// "fma"), so the values are the scalar loops' bit for bit.

// Split() for 8 coordinates: the same comparisons, truncation and step.
CRAM_TARGET_AVX2 inline void SplitV8(__m256 coordinate, __m256 low,
                                     __m256 high, __m256i* lower,
                                     __m256* fraction) {
  // blendv takes its second operand where the mask is set.
  __m256 c = _mm256_blendv_ps(low, coordinate,
                              _mm256_cmp_ps(coordinate, low, _CMP_GT_OQ));
  c = _mm256_blendv_ps(high, c, _mm256_cmp_ps(c, high, _CMP_LT_OQ));
  __m256i whole = _mm256_cvttps_epi32(c);
  // Where the truncation lies above c, the mask is -1: add it.
  const __m256 above = _mm256_cmp_ps(_mm256_cvtepi32_ps(whole), c, _CMP_GT_OQ);
  whole = _mm256_add_epi32(whole, _mm256_castps_si256(above));
  *fraction = _mm256_sub_ps(c, _mm256_cvtepi32_ps(whole));
  *lower = whole;
}

struct CornersV8 {
  __m256 fx, fy;
  __m256i r0, r1;
  __m256i in00, in01, in10, in11;  // all-ones lanes inside, zero outside
};

struct Bounds8 {
  __m256 low, high_x, high_y;
  __m256i width, height, channels, row;
  __m256i lane_offsets;  // of 8 neighbouring pixels' values in a row
};

CRAM_TARGET_AVX2 inline Bounds8 MakeBounds8(const Geometry& g, bool zeros) {
  Bounds8 d;
  d.low = _mm256_set1_ps(zeros ? -2.0f : 0.0f);
  d.high_x = _mm256_set1_ps(zeros ? static_cast<float>(g.width) + 1.0f
                                  : static_cast<float>(g.width) - 1.0f);
  d.high_y = _mm256_set1_ps(zeros ? static_cast<float>(g.height) + 1.0f
                                  : static_cast<float>(g.height) - 1.0f);
  d.width = _mm256_set1_epi32(static_cast<int32_t>(g.width));
  d.height = _mm256_set1_epi32(static_cast<int32_t>(g.height));
  d.channels = _mm256_set1_epi32(static_cast<int32_t>(g.channels));
  d.row = _mm256_set1_epi32(static_cast<int32_t>(g.width * g.channels));
  d.lane_offsets = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                      d.channels);
  return d;
}

// 0 <= v < size, as a lane mask.
CRAM_TARGET_AVX2 inline __m256i Inside8(__m256i v, __m256i size) {
  return _mm256_and_si256(_mm256_cmpgt_epi32(v, _mm256_set1_epi32(-1)),
                          _mm256_cmpgt_epi32(size, v));
}

CRAM_TARGET_AVX2 inline CornersV8 LocateV8(__m256 x, __m256 y,
                                           const Bounds8& d, __m256i lanes) {
  CornersV8 k;
  __m256i x0, y0;
  SplitV8(x, d.low, d.high_x, &x0, &k.fx);
  SplitV8(y, d.low, d.high_y, &y0, &k.fy);
  const __m256i one = _mm256_set1_epi32(1);
  const __m256i in_x0 = Inside8(x0, d.width);
  const __m256i in_x1 = Inside8(_mm256_add_epi32(x0, one), d.width);
  const __m256i in_y0 = _mm256_and_si256(Inside8(y0, d.height), lanes);
  const __m256i in_y1 =
      _mm256_and_si256(Inside8(_mm256_add_epi32(y0, one), d.height), lanes);
  k.r0 = _mm256_mullo_epi32(
      _mm256_add_epi32(_mm256_mullo_epi32(y0, d.width), x0), d.channels);
  k.r1 = _mm256_add_epi32(k.r0, d.row);
  k.in00 = _mm256_and_si256(in_y0, in_x0);
  k.in01 = _mm256_and_si256(in_y0, in_x1);
  k.in10 = _mm256_and_si256(in_y1, in_x0);
  k.in11 = _mm256_and_si256(in_y1, in_x1);
  return k;
}

// The first n of 8 lanes (n >= 8: all of them).
CRAM_TARGET_AVX2 inline __m256i TailMask8(int64_t n) {
  return _mm256_cmpgt_epi32(
      _mm256_set1_epi32(static_cast<int32_t>(std::min<int64_t>(n, 8))),
      _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// 8 coordinates of one output row from column j on: contiguous, or one
// value broadcast along the row.
CRAM_TARGET_AVX2 inline __m256 LoadCoordinates8(const float* row,
                                                int64_t col_step, int64_t j,
                                                __m256i lanes) {
  return col_step == 0 ? _mm256_set1_ps(row[0])
                       : _mm256_maskload_ps(row + j, lanes);
}

// Lanes outside `mask` read nothing and are 0.
CRAM_TARGET_AVX2 inline __m256 Gather8(__m256i mask, __m256i index,
                                       const float* base) {
  return _mm256_mask_i32gather_ps(_mm256_setzero_ps(), base, index,
                                  _mm256_castsi256_ps(mask), 4);
}

struct CornerValuesV8 {
  __m256 v00, v01, v10, v11;
};

CRAM_TARGET_AVX2 inline CornerValuesV8 GatherCorners8(const CornersV8& k,
                                                      const Bounds8& d,
                                                      int64_t c,
                                                      const float* image) {
  const __m256i cc = _mm256_set1_epi32(static_cast<int32_t>(c));
  const __m256i i00 = _mm256_add_epi32(k.r0, cc);
  const __m256i i10 = _mm256_add_epi32(k.r1, cc);
  return {Gather8(k.in00, i00, image),
          Gather8(k.in01, _mm256_add_epi32(i00, d.channels), image),
          Gather8(k.in10, i10, image),
          Gather8(k.in11, _mm256_add_epi32(i10, d.channels), image)};
}

// One bit per lane of a lane mask.
CRAM_TARGET_AVX2 inline unsigned Bits8(__m256i mask) {
  return static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(mask)));
}

// The forward pass over output rows [start, limit) of all images.
CRAM_TARGET_AVX2 void ForwardRowsAvx2(const Geometry& g, bool zeros,
                                      const float* image_data,
                                      const float* x_data, const float* y_data,
                                      float* out, int64_t start,
                                      int64_t limit) {
  const int64_t channels = g.channels, out_h = g.out_h, out_w = g.out_w;
  const int64_t image_size = g.height * g.width * channels;
  const Bounds8 d = MakeBounds8(g, zeros);
  alignas(32) float values[8];
  for (int64_t row = start; row < limit; ++row) {
    const int64_t b = row / out_h, i = row % out_h;
    const float* image = image_data + b * image_size;
    const float* x_row = x_data + b * g.x_size + i * g.x_row;
    const float* y_row = y_data + b * g.y_size + i * g.y_row;
    float* o_row = out + row * out_w * channels;
    for (int64_t j = 0; j < out_w; j += 8) {
      const int64_t n = std::min<int64_t>(8, out_w - j);
      const __m256i lanes = TailMask8(n);
      const CornersV8 k =
          LocateV8(LoadCoordinates8(x_row, g.x_col, j, lanes),
                   LoadCoordinates8(y_row, g.y_col, j, lanes), d, lanes);
      for (int64_t c = 0; c < channels; ++c) {
        const auto [v00, v01, v10, v11] = GatherCorners8(k, d, c, image);
        const __m256 top =
            _mm256_add_ps(v00, _mm256_mul_ps(k.fx, _mm256_sub_ps(v01, v00)));
        const __m256 dy = _mm256_sub_ps(
            _mm256_add_ps(v10, _mm256_mul_ps(k.fx, _mm256_sub_ps(v11, v10))),
            top);
        const __m256 value = _mm256_add_ps(top, _mm256_mul_ps(k.fy, dy));
        float* o = o_row + j * channels;
        if (channels == 1) {
          _mm256_maskstore_ps(o, lanes, value);
        } else {
          _mm256_store_ps(values, value);
          for (int64_t l = 0; l < n; ++l) o[l * channels + c] = values[l];
        }
      }
    }
  }
}

// Interleaves the 8 lanes of `left` and `right`: out[2l] = left[l],
// out[2l + 1] = right[l].
CRAM_TARGET_AVX2 inline void Interleave8(const float* left,
                                         const float* right, float* out) {
  const __m256 l = _mm256_loadu_ps(left), r = _mm256_loadu_ps(right);
  const __m256 low = _mm256_unpacklo_ps(l, r);    // l0 r0 l1 r1 | l4 r4 l5 r5
  const __m256 high = _mm256_unpackhi_ps(l, r);   // l2 r2 l3 r3 | l6 r6 l7 r7
  _mm256_storeu_ps(out, _mm256_permute2f128_ps(low, high, 0x20));
  _mm256_storeu_ps(out + 8, _mm256_permute2f128_ps(low, high, 0x31));
}

// The backward pass for images [start, limit): the per-pixel arithmetic 8
// pixels at a time; the additions into the image and coordinate gradients
// one pixel at a time in the scalar loops' order (same sums, bit for bit).
CRAM_TARGET_AVX2 void BackwardImagesAvx2(
    const Geometry& g, bool zeros, const float* image_data,
    const float* x_data, const float* y_data, const float* up_data,
    float* gi_data, float* gx_data, float* gy_data, int64_t start,
    int64_t limit) {
  const int64_t height = g.height, width = g.width, channels = g.channels,
                out_h = g.out_h, out_w = g.out_w;
  const int64_t image_size = height * width * channels;
  const int64_t pixels = out_h * out_w;
  const Bounds8 d = MakeBounds8(g, zeros);
  const __m256 zero = _mm256_setzero_ps();
  const __m256 x_max = _mm256_set1_ps(static_cast<float>(width) - 1.0f);
  const __m256 y_max = _mm256_set1_ps(static_cast<float>(height) - 1.0f);
  // Per channel and lane: the four corners' contributions.
  std::vector<float> parts(
      static_cast<size_t>(4 * 8 * std::max<int64_t>(channels, 1)));
  float* a00 = parts.data();
  float* a01 = a00 + 8 * channels;
  float* a10 = a01 + 8 * channels;
  float* a11 = a10 + 8 * channels;
  alignas(32) int32_t r0s[8], r1s[8];
  alignas(32) float sxs[8], sys[8];
  const bool x_full = g.x_row != 0 && g.x_col != 0;
  const bool y_full = g.y_row != 0 && g.y_col != 0;
  for (int64_t b = start; b < limit; ++b) {
    const float* image = image_data + b * image_size;
    float* grad_image = gi_data + b * image_size;
    std::memset(grad_image, 0, sizeof(float) * image_size);
    float* gx_image = gx_data + b * g.x_size;
    float* gy_image = gy_data + b * g.y_size;
    std::memset(gx_image, 0, sizeof(float) * g.x_size);
    std::memset(gy_image, 0, sizeof(float) * g.y_size);
    const float* x_image = x_data + b * g.x_size;
    const float* y_image = y_data + b * g.y_size;
    for (int64_t i = 0; i < out_h; ++i) {
      const float* x_row = x_image + i * g.x_row;
      const float* y_row = y_image + i * g.y_row;
      const float* u_row = up_data + (b * pixels + i * out_w) * channels;
      for (int64_t j = 0; j < out_w; j += 8) {
        const int64_t n = std::min<int64_t>(8, out_w - j);
        const __m256i lanes = TailMask8(n);
        const __m256 xo = LoadCoordinates8(x_row, g.x_col, j, lanes);
        const __m256 yo = LoadCoordinates8(y_row, g.y_col, j, lanes);
        const CornersV8 k = LocateV8(xo, yo, d, lanes);
        __m256 slope_x = zero, slope_y = zero;
        const float* u_base = u_row + j * channels;
        for (int64_t c = 0; c < channels; ++c) {
          const __m256 u = channels == 1
                               ? _mm256_maskload_ps(u_base, lanes)
                               : Gather8(lanes, d.lane_offsets, u_base + c);
          const auto [v00, v01, v10, v11] = GatherCorners8(k, d, c, image);
          const __m256 dx_top = _mm256_sub_ps(v01, v00);
          const __m256 dx_bottom = _mm256_sub_ps(v11, v10);
          const __m256 top = _mm256_add_ps(v00, _mm256_mul_ps(k.fx, dx_top));
          const __m256 dy = _mm256_sub_ps(
              _mm256_add_ps(v10, _mm256_mul_ps(k.fx, dx_bottom)), top);
          slope_x = _mm256_add_ps(
              slope_x,
              _mm256_mul_ps(
                  u, _mm256_add_ps(
                         dx_top, _mm256_mul_ps(
                                     k.fy, _mm256_sub_ps(dx_bottom, dx_top)))));
          slope_y = _mm256_add_ps(slope_y, _mm256_mul_ps(u, dy));
          const __m256 up_bottom = _mm256_mul_ps(u, k.fy);
          const __m256 up_top = _mm256_sub_ps(u, up_bottom);
          const __m256 up_01 = _mm256_mul_ps(up_top, k.fx);
          const __m256 up_11 = _mm256_mul_ps(up_bottom, k.fx);
          _mm256_storeu_ps(a00 + 8 * c, _mm256_sub_ps(up_top, up_01));
          _mm256_storeu_ps(a01 + 8 * c, up_01);
          _mm256_storeu_ps(a10 + 8 * c, _mm256_sub_ps(up_bottom, up_11));
          _mm256_storeu_ps(a11 + 8 * c, up_11);
        }
        if (!zeros) {
          // Border padding: the clamped region and the border itself have
          // zero slope (as torch).
          const __m256 live_x = _mm256_and_ps(_mm256_cmp_ps(xo, zero, _CMP_GT_OQ),
                                              _mm256_cmp_ps(xo, x_max, _CMP_LT_OQ));
          const __m256 live_y = _mm256_and_ps(_mm256_cmp_ps(yo, zero, _CMP_GT_OQ),
                                              _mm256_cmp_ps(yo, y_max, _CMP_LT_OQ));
          slope_x = _mm256_and_ps(live_x, slope_x);
          slope_y = _mm256_and_ps(live_y, slope_y);
        }
        _mm256_store_si256(reinterpret_cast<__m256i*>(r0s), k.r0);
        _mm256_store_si256(reinterpret_cast<__m256i*>(r1s), k.r1);
        _mm256_store_ps(sxs, slope_x);
        _mm256_store_ps(sys, slope_y);
        const unsigned m00 = Bits8(k.in00), m01 = Bits8(k.in01),
                       m10 = Bits8(k.in10), m11 = Bits8(k.in11);
        if (channels == 1) {
          // The left and right corners of a row are neighbours in memory:
          // one 64-bit addition for both, in the same order per pixel.
          alignas(32) float top[16], bottom[16];
          Interleave8(a00, a01, top);
          Interleave8(a10, a11, bottom);
          const unsigned both_top = m00 & m01, both_bottom = m10 & m11;
          for (int64_t l = 0; l < n; ++l) {
            const unsigned bit = 1u << l;
            float* t0 = grad_image + r0s[l];
            float* t1 = grad_image + r1s[l];
            if (both_top & bit) {
              AddPair(t0, top + 2 * l);
            } else {
              if (m00 & bit) t0[0] += top[2 * l];
              if (m01 & bit) t0[1] += top[2 * l + 1];
            }
            if (both_bottom & bit) {
              AddPair(t1, bottom + 2 * l);
            } else {
              if (m10 & bit) t1[0] += bottom[2 * l];
              if (m11 & bit) t1[1] += bottom[2 * l + 1];
            }
          }
        } else {
          for (int64_t l = 0; l < n; ++l) {
            const unsigned bit = 1u << l;
            float* t0 = grad_image + r0s[l];
            float* t1 = grad_image + r1s[l];
            for (int64_t c = 0; c < channels; ++c) {
              if (m00 & bit) t0[c] += a00[8 * c + l];
              if (m01 & bit) t0[channels + c] += a01[8 * c + l];
              if (m10 & bit) t1[c] += a10[8 * c + l];
              if (m11 & bit) t1[channels + c] += a11[8 * c + l];
            }
          }
        }
        if (!x_full || !y_full) {
          for (int64_t l = 0; l < n; ++l) {
            if (!x_full) gx_image[i * g.x_row + (j + l) * g.x_col] += sxs[l];
            if (!y_full) gy_image[i * g.y_row + (j + l) * g.y_col] += sys[l];
          }
        }
        // One coordinate per output pixel: its gradient is written once.
        if (x_full) {
          float* gx = gx_image + i * g.x_row + j;
          _mm256_maskstore_ps(
              gx, lanes, _mm256_add_ps(_mm256_maskload_ps(gx, lanes), slope_x));
        }
        if (y_full) {
          float* gy = gy_image + i * g.y_row + j;
          _mm256_maskstore_ps(
              gy, lanes, _mm256_add_ps(_mm256_maskload_ps(gy, lanes), slope_y));
        }
      }
    }
  }
}

// The sum of 8 lanes: pairs of halves, then of quarters, then the last two.
CRAM_TARGET_AVX2 inline float Sum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

// RowSumsAvx512 with 8 lanes of partial sums.
CRAM_TARGET_AVX2 void RowSumsAvx2(const float* u, const float* v,
                                  const float* across_x, const float* across_y,
                                  int64_t n, double sums[4]) {
  __m256 ua = _mm256_setzero_ps(), us = ua, va = ua, vs = ua;
  for (int64_t j = 0; j < n; j += 8) {
    const __m256i lanes = TailMask8(n - j);
    const __m256 uj = _mm256_maskload_ps(u + j, lanes);
    const __m256 vj = _mm256_maskload_ps(v + j, lanes);
    ua = _mm256_add_ps(ua, _mm256_mul_ps(uj, _mm256_maskload_ps(across_x + j, lanes)));
    us = _mm256_add_ps(us, uj);
    va = _mm256_add_ps(va, _mm256_mul_ps(vj, _mm256_maskload_ps(across_y + j, lanes)));
    vs = _mm256_add_ps(vs, vj);
  }
  sums[0] = Sum8(ua);
  sums[1] = Sum8(us);
  sums[2] = Sum8(va);
  sums[3] = Sum8(vs);
}

#endif  // CRAM_SAMPLER_X86

using Workers = tensorflow::DeviceBase::CpuWorkerThreads;

// The forward pass: out (B, h, w, C) from the images and the coordinates
// laid out as `g` says. Split over output rows.
void Forward(const Workers& workers, const Geometry& g, bool zeros,
             const float* image_data, const float* x_data,
             const float* y_data, float* out) {
  const int64_t height = g.height, width = g.width, channels = g.channels,
                out_h = g.out_h, out_w = g.out_w;
  // One unit of work: one output row of one image.
  auto rows = [&](int64_t start, int64_t limit) {
    for (int64_t row = start; row < limit; ++row) {
      const int64_t b = row / out_h, i = row % out_h;
      const float* image = image_data + b * height * width * channels;
      const float* x_row = x_data + b * g.x_size + i * g.x_row;
      const float* y_row = y_data + b * g.y_size + i * g.y_row;
      for (int64_t j = 0; j < out_w; ++j) {
        const int64_t p = row * out_w + j;
        const Corners k = Locate(x_row[j * g.x_col], y_row[j * g.y_col],
                                 width, height, channels, zeros);
        float* o = out + p * channels;
        for (int64_t c = 0; c < channels; ++c) {
          const auto [v00, v01, v10, v11] = ReadCorners(k, image, channels, c);
          const float top = v00 + k.fx * (v01 - v00);
          const float dy = (v10 + k.fx * (v11 - v10)) - top;
          o[c] = top + k.fy * dy;
        }
      }
    }
  };
#ifdef CRAM_SAMPLER_X86
  const Isa isa = VectorIsa();
  if (isa != Isa::kScalar && FitsInt32(g)) {
    tensorflow::Shard(workers.num_threads, workers.workers, g.batch * out_h,
                      /*cost_per_unit=*/out_w * (4 + 4 * channels),
                      [&](int64_t start, int64_t limit) {
                        if (isa == Isa::kAvx512) {
                          ForwardRowsAvx512(g, zeros, image_data, x_data,
                                            y_data, out, start, limit);
                        } else {
                          ForwardRowsAvx2(g, zeros, image_data, x_data,
                                          y_data, out, start, limit);
                        }
                      });
    return;
  }
#endif
  tensorflow::Shard(workers.num_threads, workers.workers, g.batch * out_h,
                    /*cost_per_unit=*/out_w * (20 + 12 * channels), rows);
}

// The backward pass: the gradients of the images and of the coordinates
// (laid out as x and y) from the output's. Split over images.
void Backward(const Workers& workers, const Geometry& g, bool zeros,
              const float* image_data, const float* x_data,
              const float* y_data, const float* up_data, float* gi_data,
              float* gx_data, float* gy_data) {
  const int64_t height = g.height, width = g.width, channels = g.channels,
                out_w = g.out_w;
  const int64_t image_size = height * width * channels;
  const int64_t pixels = g.out_h * out_w;
  auto images_range = [&](int64_t start, int64_t limit) {
    for (int64_t b = start; b < limit; ++b) {
      const float* image = image_data + b * image_size;
      float* grad_image = gi_data + b * image_size;
      std::memset(grad_image, 0, sizeof(float) * image_size);
      // Coordinate gradients accumulate over the outputs that share a
      // (broadcast) coordinate.
      float* gx_image = gx_data + b * g.x_size;
      float* gy_image = gy_data + b * g.y_size;
      std::memset(gx_image, 0, sizeof(float) * g.x_size);
      std::memset(gy_image, 0, sizeof(float) * g.y_size);
      for (int64_t q = 0, i = 0, j = 0; q < pixels; ++q) {
        const int64_t p = b * pixels + q;
        const int64_t xq = i * g.x_row + j * g.x_col;
        const int64_t yq = i * g.y_row + j * g.y_col;
        const float xo = x_data[b * g.x_size + xq];
        const float yo = y_data[b * g.y_size + yq];
        const Corners k = Locate(xo, yo, width, height, channels, zeros);
        const float fx = k.fx, fy = k.fy;
        const float* u = up_data + p * channels;
        float slope_x = 0.0f, slope_y = 0.0f;
        for (int64_t c = 0; c < channels; ++c) {
          const auto [v00, v01, v10, v11] = ReadCorners(k, image, channels, c);
          const float dx_top = v01 - v00;
          const float dx_bottom = v11 - v10;
          const float top = v00 + fx * dx_top;
          const float dy = (v10 + fx * dx_bottom) - top;
          slope_x += u[c] * (dx_top + fy * (dx_bottom - dx_top));
          slope_y += u[c] * dy;
          const float up_bottom = u[c] * fy;
          const float up_top = u[c] - up_bottom;
          const float up_01 = up_top * fx;
          const float up_11 = up_bottom * fx;
          if (k.in00) grad_image[k.r0 + c] += up_top - up_01;
          if (k.in01) grad_image[k.r0 + channels + c] += up_01;
          if (k.in10) grad_image[k.r1 + c] += up_bottom - up_11;
          if (k.in11) grad_image[k.r1 + channels + c] += up_11;
        }
        if (!zeros) {
          // Border padding: torch counts the clamped region and the border
          // itself as clipped (zero gradient).
          if (!(xo > 0.0f && xo < static_cast<float>(width) - 1.0f)) slope_x = 0.0f;
          if (!(yo > 0.0f && yo < static_cast<float>(height) - 1.0f)) slope_y = 0.0f;
        }
        gx_image[xq] += slope_x;
        gy_image[yq] += slope_y;
        if (++j == out_w) {  // (i, j) of output pixel q, without a division
          j = 0;
          ++i;
        }
      }
    }
  };
#ifdef CRAM_SAMPLER_X86
  const Isa isa = VectorIsa();
  if (isa != Isa::kScalar && FitsInt32(g)) {
    tensorflow::Shard(workers.num_threads, workers.workers, g.batch,
                      /*cost_per_unit=*/pixels * (10 + 12 * channels) +
                          image_size,
                      [&](int64_t start, int64_t limit) {
                        if (isa == Isa::kAvx512) {
                          BackwardImagesAvx512(g, zeros, image_data, x_data,
                                               y_data, up_data, gi_data,
                                               gx_data, gy_data, start, limit);
                        } else {
                          BackwardImagesAvx2(g, zeros, image_data, x_data,
                                             y_data, up_data, gi_data, gx_data,
                                             gy_data, start, limit);
                        }
                      });
    return;
  }
#endif
  tensorflow::Shard(workers.num_threads, workers.workers, g.batch,
                    /*cost_per_unit=*/pixels * (40 + 30 * channels) + image_size,
                    images_range);
}

// The images' sizes and the coordinates' layout: x (B, x_rows, x_cols) and
// y (B, y_rows, y_cols), each (B, h, w) or broadcast along one axis.
void SetLayout(const Tensor& images, int64_t x_rows, int64_t x_cols,
               int64_t y_rows, int64_t y_cols, Geometry* g) {
  g->batch = images.dim_size(0);
  g->height = images.dim_size(1);
  g->width = images.dim_size(2);
  g->channels = images.dim_size(3);
  g->out_h = std::max(x_rows, y_rows);
  g->out_w = std::max(x_cols, y_cols);
  if (x_rows == 0 || y_rows == 0) g->out_h = 0;
  if (x_cols == 0 || y_cols == 0) g->out_w = 0;
  g->x_size = x_rows * x_cols;
  g->x_row = x_rows == 1 ? 0 : x_cols;
  g->x_col = x_cols == 1 ? 0 : 1;
  g->y_size = y_rows * y_cols;
  g->y_row = y_rows == 1 ? 0 : y_cols;
  g->y_col = y_cols == 1 ? 0 : 1;
}

absl::Status CheckImages(const Tensor& images) {
  if (images.dims() != 4) {
    return absl::InvalidArgumentError(absl::StrCat(
        "images must be (batch, height, width, channels), got shape ",
        images.shape().DebugString()));
  }
  return absl::OkStatus();
}

absl::Status CheckUpstream(const Tensor& upstream, const Geometry& g) {
  const TensorShape expected({g.batch, g.out_h, g.out_w, g.channels});
  if (upstream.shape() != expected) {
    return absl::InvalidArgumentError(
        absl::StrCat("upstream must have the output's shape ",
                     expected.DebugString(), ", got ",
                     upstream.shape().DebugString()));
  }
  return absl::OkStatus();
}

class SampleCommon : public OpKernel {
 public:
  explicit SampleCommon(OpKernelConstruction* context) : OpKernel(context) {
    std::string padding;
    OP_REQUIRES_OK(context, context->GetAttr("padding", &padding));
    zeros_ = padding == "zeros";
  }

 protected:
  // Checks images (B, H, W, C) and x, y (B, h, w) or broadcast to it.
  static absl::Status CheckInputs(const Tensor& images, const Tensor& x,
                                  const Tensor& y, Geometry* g) {
    TF_RETURN_IF_ERROR(CheckImages(images));
    auto mismatch = [&]() {
      return absl::InvalidArgumentError(absl::StrCat(
          "x and y must both be (batch, out_height, out_width), or broadcast to "
          "it along the rows or columns, got ",
          x.shape().DebugString(), " and ", y.shape().DebugString()));
    };
    if (x.dims() != 3 || y.dims() != 3 || x.dim_size(0) != y.dim_size(0)) {
      return mismatch();
    }
    for (int axis = 1; axis < 3; ++axis) {
      const int64_t a = x.dim_size(axis), b = y.dim_size(axis);
      if (a != b && a != 1 && b != 1) return mismatch();
    }
    if (x.dim_size(0) != images.dim_size(0)) {
      return absl::InvalidArgumentError(
          absl::StrCat("x has batch ", x.dim_size(0), " but images have batch ",
                       images.dim_size(0)));
    }
    SetLayout(images, x.dim_size(1), x.dim_size(2), y.dim_size(1),
              y.dim_size(2), g);
    return absl::OkStatus();
  }
  bool zeros_;
};

class SampleOp : public SampleCommon {
 public:
  using SampleCommon::SampleCommon;

  void Compute(OpKernelContext* context) override {
    const Tensor& images = context->input(0);
    const Tensor& x = context->input(1);
    const Tensor& y = context->input(2);
    Geometry g;
    OP_REQUIRES_OK(context, CheckInputs(images, x, y, &g));
    Tensor* output = nullptr;
    OP_REQUIRES_OK(context,
                   context->allocate_output(
                       0, TensorShape({g.batch, g.out_h, g.out_w, g.channels}),
                       &output));
    Forward(*context->device()->tensorflow_cpu_worker_threads(), g, zeros_,
            images.flat<float>().data(), x.flat<float>().data(),
            y.flat<float>().data(), output->flat<float>().data());
  }
};

class SampleGradOp : public SampleCommon {
 public:
  using SampleCommon::SampleCommon;

  void Compute(OpKernelContext* context) override {
    const Tensor& images = context->input(0);
    const Tensor& x = context->input(1);
    const Tensor& y = context->input(2);
    const Tensor& upstream = context->input(3);
    Geometry g;
    OP_REQUIRES_OK(context, CheckInputs(images, x, y, &g));
    OP_REQUIRES_OK(context, CheckUpstream(upstream, g));
    Tensor *grad_images = nullptr, *grad_x = nullptr, *grad_y = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, images.shape(), &grad_images));
    OP_REQUIRES_OK(context, context->allocate_output(1, x.shape(), &grad_x));
    OP_REQUIRES_OK(context, context->allocate_output(2, y.shape(), &grad_y));
    Backward(*context->device()->tensorflow_cpu_worker_threads(), g, zeros_,
             images.flat<float>().data(), x.flat<float>().data(),
             y.flat<float>().data(), upstream.flat<float>().data(),
             grad_images->flat<float>().data(), grad_x->flat<float>().data(),
             grad_y->flat<float>().data());
  }
};

// === Sampling by transform parameters ===
//
// The pixel coordinates of one input axis are an affine function of the
// output pixel indices (cram_keras.ops.sampling._pixel_terms): for the
// theta row (t1, t2, t3) that produces them,
// t1 * across[j] + t2 * down[i] + t3 * half + offset, the terms computed in
// double and rounded to float, as the keras.ops path does.
struct AxisTerms {
  std::vector<float> across, down;  // per output column j, per output row i
  float half, offset;
};

std::vector<float> Terms(int64_t in, int64_t out, bool align_corners) {
  std::vector<float> terms(static_cast<size_t>(out));
  for (int64_t k = 0; k < out; ++k) {
    const double kk = static_cast<double>(k);
    double term;
    if (align_corners) {
      const double half = (static_cast<double>(in) - 1.0) / 2.0;
      term = out == 1 ? 0.0
                      : (static_cast<double>(in) - 1.0) /
                                (static_cast<double>(out) - 1.0) * kk -
                            half;
    } else {
      term = static_cast<double>(in) / static_cast<double>(out) * (kk + 0.5) -
             static_cast<double>(in) / 2.0;
    }
    terms[k] = static_cast<float>(term);
  }
  return terms;
}

AxisTerms MakeAxisTerms(int64_t in, int64_t out_h, int64_t out_w,
                        bool align_corners) {
  AxisTerms t;
  t.across = Terms(in, out_w, align_corners);
  t.down = Terms(in, out_h, align_corners);
  const double size = static_cast<double>(in);
  t.half = static_cast<float>(align_corners ? (size - 1.0) / 2.0 : size / 2.0);
  t.offset = static_cast<float>((size - 1.0) / 2.0);
  return t;
}

enum class Transform { kAffine, kAttention, kAnisotropic };

// RowSumsAvx512 or RowSumsAvx2 where the CPU has them, else the same sums
// one value at a time.
void RowSums(const float* u, const float* v, const float* across_x,
             const float* across_y, int64_t n, double sums[4]) {
#ifdef CRAM_SAMPLER_X86
  switch (VectorIsa()) {
    case Isa::kAvx512:
      RowSumsAvx512(u, v, across_x, across_y, n, sums);
      return;
    case Isa::kAvx2:
      RowSumsAvx2(u, v, across_x, across_y, n, sums);
      return;
    case Isa::kScalar:
      break;
  }
#endif
  float ua = 0, us = 0, va = 0, vs = 0;
  for (int64_t j = 0; j < n; ++j) {
    ua += u[j] * across_x[j];
    us += u[j];
    va += v[j] * across_y[j];
    vs += v[j];
  }
  sums[0] = ua;
  sums[1] = us;
  sums[2] = va;
  sums[3] = vs;
}

class TransformCommon : public OpKernel {
 public:
  explicit TransformCommon(OpKernelConstruction* context) : OpKernel(context) {
    std::string padding, transform;
    OP_REQUIRES_OK(context, context->GetAttr("padding", &padding));
    OP_REQUIRES_OK(context, context->GetAttr("transform", &transform));
    OP_REQUIRES_OK(context, context->GetAttr("output_height", &out_h_));
    OP_REQUIRES_OK(context, context->GetAttr("output_width", &out_w_));
    OP_REQUIRES_OK(context, context->GetAttr("align_corners", &align_corners_));
    zeros_ = padding == "zeros";
    transform_ = transform == "affine"      ? Transform::kAffine
                 : transform == "attention" ? Transform::kAttention
                                            : Transform::kAnisotropic;
    parameters_ = transform_ == Transform::kAffine      ? 6
                  : transform_ == Transform::kAttention ? 3
                                                        : 4;
  }

 protected:
  // Checks the inputs, sets the geometry and allocates the coordinates:
  // (B, h, w) each for the affine map, x (B, 1, w) and y (B, h, 1) for the
  // axis-aligned ones (x depends on the column only, y on the row only).
  absl::Status Prepare(OpKernelContext* context, const Tensor& images,
                       const Tensor& params, Geometry* g, Tensor* x,
                       Tensor* y) const {
    TF_RETURN_IF_ERROR(CheckImages(images));
    if (params.dims() != 2 || params.dim_size(1) != parameters_) {
      return absl::InvalidArgumentError(
          absl::StrCat("params must be (batch, ", parameters_, "), got shape ",
                       params.shape().DebugString()));
    }
    if (params.dim_size(0) != images.dim_size(0)) {
      return absl::InvalidArgumentError(
          absl::StrCat("params have batch ", params.dim_size(0),
                       " but images have batch ", images.dim_size(0)));
    }
    const bool full = transform_ == Transform::kAffine;
    const int64_t x_rows = full ? out_h_ : 1, y_cols = full ? out_w_ : 1;
    SetLayout(images, x_rows, out_w_, out_h_, y_cols, g);
    TF_RETURN_IF_ERROR(context->allocate_temp(
        tensorflow::DT_FLOAT, TensorShape({g->batch, x_rows, out_w_}), x));
    TF_RETURN_IF_ERROR(context->allocate_temp(
        tensorflow::DT_FLOAT, TensorShape({g->batch, out_h_, y_cols}), y));
    return absl::OkStatus();
  }

  // Which parameters scale and shift each axis, for the axis-aligned maps.
  int ScaleY() const { return transform_ == Transform::kAnisotropic ? 1 : 0; }
  int ShiftX() const { return parameters_ - 2; }
  int ShiftY() const { return parameters_ - 1; }

  // The coordinates of every output pixel, split over images.
  void Coordinates(const Workers& workers, const Geometry& g,
                   const float* params, float* x, float* y) const {
    const AxisTerms tx = MakeAxisTerms(g.width, out_h_, out_w_, align_corners_);
    const AxisTerms ty = MakeAxisTerms(g.height, out_h_, out_w_, align_corners_);
    const int64_t out_h = out_h_, out_w = out_w_;
    auto images = [&](int64_t start, int64_t limit) {
      for (int64_t b = start; b < limit; ++b) {
        const float* p = params + b * parameters_;
        if (transform_ == Transform::kAffine) {
          float* xb = x + b * g.x_size;
          float* yb = y + b * g.y_size;
          for (int64_t i = 0; i < out_h; ++i) {
            const float* across_x = tx.across.data();
            const float* across_y = ty.across.data();
            const float down_x = tx.down[i], down_y = ty.down[i];
            float* xr = xb + i * out_w;
            float* yr = yb + i * out_w;
            // Summed in the order of the keras.ops path's matrix product.
            for (int64_t j = 0; j < out_w; ++j) {
              xr[j] = p[0] * across_x[j] + p[1] * down_x + p[2] * tx.half +
                      tx.offset;
            }
            for (int64_t j = 0; j < out_w; ++j) {
              yr[j] = p[3] * across_y[j] + p[4] * down_y + p[5] * ty.half +
                      ty.offset;
            }
          }
        } else {
          const float sx = p[0], sy = p[ScaleY()];
          const float shift_x = p[ShiftX()], shift_y = p[ShiftY()];
          for (int64_t j = 0; j < out_w; ++j) {
            x[b * out_w + j] = sx * tx.across[j] + shift_x * tx.half + tx.offset;
          }
          for (int64_t i = 0; i < out_h; ++i) {
            y[b * out_h + i] = sy * ty.down[i] + shift_y * ty.half + ty.offset;
          }
        }
      }
    };
    tensorflow::Shard(workers.num_threads, workers.workers, g.batch,
                      /*cost_per_unit=*/8 * (g.x_size + g.y_size), images);
  }

  // The parameters' gradient from the coordinates' (chain rule through
  // Coordinates): each output row's sums in float, the rows' in double.
  // Split over images.
  void ParamsGradient(const Workers& workers, const Geometry& g,
                      const float* gx, const float* gy, float* grad) const {
    const AxisTerms tx = MakeAxisTerms(g.width, out_h_, out_w_, align_corners_);
    const AxisTerms ty = MakeAxisTerms(g.height, out_h_, out_w_, align_corners_);
    const int64_t out_h = out_h_, out_w = out_w_;
    auto images = [&](int64_t start, int64_t limit) {
      for (int64_t b = start; b < limit; ++b) {
        double sums[6] = {0, 0, 0, 0, 0, 0};
        if (transform_ == Transform::kAffine) {
          const float* gxb = gx + b * g.x_size;
          const float* gyb = gy + b * g.y_size;
          for (int64_t i = 0; i < out_h; ++i) {
            const float* u = gxb + i * out_w;
            const float* v = gyb + i * out_w;
            double row[4] = {0, 0, 0, 0};
            RowSums(u, v, tx.across.data(), ty.across.data(), out_w, row);
            sums[0] += row[0];
            sums[1] += row[1] * tx.down[i];
            sums[2] += row[1];
            sums[3] += row[2];
            sums[4] += row[3] * ty.down[i];
            sums[5] += row[3];
          }
          sums[2] *= tx.half;
          sums[5] *= ty.half;
        } else {
          double scale_x = 0, scale_y = 0, shift_x = 0, shift_y = 0;
          for (int64_t j = 0; j < out_w; ++j) {
            const double u = gx[b * out_w + j];
            scale_x += u * tx.across[j];
            shift_x += u;
          }
          for (int64_t i = 0; i < out_h; ++i) {
            const double v = gy[b * out_h + i];
            scale_y += v * ty.down[i];
            shift_y += v;
          }
          sums[0] += scale_x;
          sums[ScaleY()] += scale_y;
          sums[ShiftX()] = shift_x * tx.half;
          sums[ShiftY()] = shift_y * ty.half;
        }
        for (int k = 0; k < parameters_; ++k) {
          grad[b * parameters_ + k] = static_cast<float>(sums[k]);
        }
      }
    };
    tensorflow::Shard(workers.num_threads, workers.workers, g.batch,
                      /*cost_per_unit=*/8 * (g.x_size + g.y_size), images);
  }

  int64_t out_h_, out_w_;
  bool align_corners_, zeros_;
  Transform transform_;
  int parameters_;
};

class TransformSampleOp : public TransformCommon {
 public:
  using TransformCommon::TransformCommon;

  void Compute(OpKernelContext* context) override {
    const Tensor& images = context->input(0);
    const Tensor& params = context->input(1);
    Geometry g;
    Tensor x, y;
    OP_REQUIRES_OK(context, Prepare(context, images, params, &g, &x, &y));
    const Workers& workers = *context->device()->tensorflow_cpu_worker_threads();
    Coordinates(workers, g, params.flat<float>().data(), x.flat<float>().data(),
                y.flat<float>().data());
    Tensor* output = nullptr;
    OP_REQUIRES_OK(context,
                   context->allocate_output(
                       0, TensorShape({g.batch, g.out_h, g.out_w, g.channels}),
                       &output));
    Forward(workers, g, zeros_, images.flat<float>().data(),
            x.flat<float>().data(), y.flat<float>().data(),
            output->flat<float>().data());
  }
};

class TransformSampleGradOp : public TransformCommon {
 public:
  using TransformCommon::TransformCommon;

  void Compute(OpKernelContext* context) override {
    const Tensor& images = context->input(0);
    const Tensor& params = context->input(1);
    const Tensor& upstream = context->input(2);
    Geometry g;
    Tensor x, y, grad_x, grad_y;
    OP_REQUIRES_OK(context, Prepare(context, images, params, &g, &x, &y));
    OP_REQUIRES_OK(context, CheckUpstream(upstream, g));
    OP_REQUIRES_OK(context, context->allocate_temp(tensorflow::DT_FLOAT,
                                                   x.shape(), &grad_x));
    OP_REQUIRES_OK(context, context->allocate_temp(tensorflow::DT_FLOAT,
                                                   y.shape(), &grad_y));
    Tensor *grad_images = nullptr, *grad_params = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, images.shape(), &grad_images));
    OP_REQUIRES_OK(context, context->allocate_output(1, params.shape(), &grad_params));
    const Workers& workers = *context->device()->tensorflow_cpu_worker_threads();
    Coordinates(workers, g, params.flat<float>().data(), x.flat<float>().data(),
                y.flat<float>().data());
    Backward(workers, g, zeros_, images.flat<float>().data(),
             x.flat<float>().data(), y.flat<float>().data(),
             upstream.flat<float>().data(), grad_images->flat<float>().data(),
             grad_x.flat<float>().data(), grad_y.flat<float>().data());
    ParamsGradient(workers, g, grad_x.flat<float>().data(),
                   grad_y.flat<float>().data(), grad_params->flat<float>().data());
  }
};

}  // namespace

// Which loops this process runs, for cram_keras.ops.native_sampler.vector_isa:
// 0 scalar, 1 AVX2, 2 AVX-512.
extern "C" int CramSamplerIsa() {
#ifdef CRAM_SAMPLER_X86
  return static_cast<int>(VectorIsa());
#else
  return 0;
#endif
}

REGISTER_KERNEL_BUILDER(Name("CramSampleAtPixels").Device(tensorflow::DEVICE_CPU),
                        SampleOp);
REGISTER_KERNEL_BUILDER(Name("CramSampleAtPixelsGrad").Device(tensorflow::DEVICE_CPU),
                        SampleGradOp);
REGISTER_KERNEL_BUILDER(Name("CramTransformSample").Device(tensorflow::DEVICE_CPU),
                        TransformSampleOp);
REGISTER_KERNEL_BUILDER(
    Name("CramTransformSampleGrad").Device(tensorflow::DEVICE_CPU),
    TransformSampleGradOp);
