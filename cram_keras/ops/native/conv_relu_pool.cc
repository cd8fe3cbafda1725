// A one-channel convolution, its ReLU and a 2x2 max-pooling as one CPU op
// each way: the first layers of RNN-SPN's classifier and localisation
// networks (conv filters@KHxKW on a grey image, ReLU, maxpool 2), the fast
// path of cram_keras.ops.conv_pool.conv_relu_max_pool.
//
// CramConvReluPool:     images (B, H, W, 1), kernel (KH, KW, 1, F),
//                       bias (F) -> pooled (B, Ho, Wo, F), which (B, Ho, Wo, F)
// CramConvReluPoolGrad: images, kernel, bias, pooled, which,
//                       upstream (B, Ho, Wo, F)
//                       -> grad_images, grad_kernel, grad_bias
//                       (bias only for its shape: the pooled values and
//                       which of the window's positions they came from are
//                       all the backward pass needs)
//
// The convolution is "valid" with stride 1, the pooling 2x2 with stride 2
// and "valid" (Ho = (H - KH + 1) / 2, Wo = (W - KW + 1) / 2, rounded down),
// as keras.layers.Conv2D(F, (KH, KW), activation="relu") followed by
// keras.layers.MaxPooling2D(2). The full-resolution activations are never
// stored: for each pooled pixel the four convolution outputs of its window
// are computed in registers, the largest kept (ReLU and the maximum
// commute, and so do the bias and the maximum), with which of the four it
// was (0-3, row-major; the first of equal ones) for the backward pass, which
// sends each pooled pixel's gradient to that one position only, as max
// pooling's gradient does. Keras' layers store the (B, H - KH + 1,
// W - KW + 1, F) activations and their gradient, four times the pooled
// size: at RNN-SPN's shapes those passes over memory are most of the
// layers' time.
//
// The convolution sums its taps in row-major order (TensorFlow's own
// convolution sums in another order: the values agree to float32 rounding).
// The forward pass is split over pooled rows, 8 filters at a time; the
// backward pass over images, filter by filter, 8 taps at a time, each
// image's kernel and bias gradients summed in a buffer of its own and the
// images' sums added in image order: deterministic, whatever the number of
// threads. (GCC's vector extensions; AVX2 where the CPU has it, chosen at
// run time.)

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__) && \
    !defined(__clang__)
// One copy of each loop for CPUs with AVX2 and one for the others, picked
// when the library loads (GCC's function multi-versioning, by feature).
#define CRAM_CONV_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define CRAM_CONV_CLONES
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

// The pooled size of one axis: (size - kernel + 1) / 2, at least 0.
DimensionHandle PooledDim(InferenceContext* c, DimensionHandle size,
                          DimensionHandle kernel) {
  if (!c->ValueKnown(size) || !c->ValueKnown(kernel)) return c->UnknownDim();
  return c->MakeDim(std::max<int64_t>(0, (c->Value(size) - c->Value(kernel) + 1) / 2));
}

absl::Status ConvPoolShape(InferenceContext* c) {
  ShapeHandle images, kernel, bias;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &images));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 4, &kernel));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 1, &bias));
  DimensionHandle filters;
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(kernel, 3), c->Dim(bias, 0), &filters));
  ShapeHandle pooled = c->MakeShape(
      {c->Dim(images, 0), PooledDim(c, c->Dim(images, 1), c->Dim(kernel, 0)),
       PooledDim(c, c->Dim(images, 2), c->Dim(kernel, 1)), filters});
  c->set_output(0, pooled);
  c->set_output(1, pooled);
  return absl::OkStatus();
}

absl::Status ConvPoolGradShape(InferenceContext* c) {
  c->set_output(0, c->input(0));
  c->set_output(1, c->input(1));
  c->set_output(2, c->input(2));
  return absl::OkStatus();
}

}  // namespace

REGISTER_OP("CramConvReluPool")
    .Input("images: float")
    .Input("kernel: float")
    .Input("bias: float")
    .Output("pooled: float")
    .Output("which: uint8")
    .SetShapeFn(ConvPoolShape);

REGISTER_OP("CramConvReluPoolGrad")
    .Input("images: float")
    .Input("kernel: float")
    .Input("bias: float")
    .Input("pooled: float")
    .Input("which: uint8")
    .Input("upstream: float")
    .Output("grad_images: float")
    .Output("grad_kernel: float")
    .Output("grad_bias: float")
    .SetShapeFn(ConvPoolGradShape);

namespace {

typedef float V8 __attribute__((vector_size(32)));
constexpr int kLanes = 8;

struct Sizes {
  int64_t batch, height, width, kh, kw, filters, out_h, out_w;
  int64_t groups;  // of 8 filters (the last padded with zeros)
  int64_t Taps() const { return kh * kw; }
};

inline V8 Zero() { return V8{0, 0, 0, 0, 0, 0, 0, 0}; }

inline V8 Load(const float* p) {
  V8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline void Store(float* p, V8 v) { std::memcpy(p, &v, sizeof(v)); }

// The kernel as [tap][group * 8 + lane], padded with zero filters.
std::vector<float> PadKernel(const float* kernel, const Sizes& s) {
  const int64_t padded = s.groups * kLanes;
  std::vector<float> out(static_cast<size_t>(s.Taps() * padded), 0.0f);
  for (int64_t t = 0; t < s.Taps(); ++t) {
    std::memcpy(&out[t * padded], kernel + t * s.filters,
                sizeof(float) * s.filters);
  }
  return out;
}

// The offset of each tap from its window's top-left pixel, row-major.
std::vector<int64_t> TapOffsets(const Sizes& s) {
  std::vector<int64_t> offsets(static_cast<size_t>(s.Taps()));
  for (int64_t t = 0; t < s.Taps(); ++t) {
    offsets[t] = (t / s.kw) * s.width + t % s.kw;
  }
  return offsets;
}

// Pooled rows [start, limit) of all images (row = b * out_h + i).
CRAM_CONV_CLONES
void ForwardRows(const Sizes& s, const float* images, const float* kernel,
                 const float* bias, float* pooled, uint8_t* which,
                 int64_t start, int64_t limit) {
  const int64_t padded = s.groups * kLanes, taps = s.Taps();
  const std::vector<int64_t> offsets = TapOffsets(s);
  const int64_t* tap = offsets.data();
  // Per filter: the largest of the window's outputs so far, and which.
  // (Plain float buffers: vectors are loaded and stored unaligned.)
  std::vector<float> best(static_cast<size_t>(padded));
  std::vector<float> arg(static_cast<size_t>(padded));
  for (int64_t row = start; row < limit; ++row) {
    const int64_t b = row / s.out_h, i = row % s.out_h;
    const float* image = images + b * s.height * s.width;
    for (int64_t j = 0; j < s.out_w; ++j) {
      // The window's four positions, row-major.
      const float* c0 = image + 2 * i * s.width + 2 * j;
      const float* c1 = c0 + 1;
      const float* c2 = c0 + s.width;
      const float* c3 = c2 + 1;
      for (int64_t g = 0; g < s.groups; ++g) {
        const float* k = kernel + g * kLanes;
        V8 z0 = Zero(), z1 = Zero(), z2 = Zero(), z3 = Zero();
        for (int64_t t = 0; t < taps; ++t) {
          const V8 w = Load(k + t * padded);
          const int64_t o = tap[t];
          z0 += c0[o] * w;
          z1 += c1[o] * w;
          z2 += c2[o] * w;
          z3 += c3[o] * w;
        }
        // The first of equal ones: replace only where strictly larger.
        V8 best_g = z0, arg_g = Zero();
        auto larger = z1 > best_g;
        best_g = larger ? z1 : best_g;
        arg_g = larger ? Zero() + 1.0f : arg_g;
        larger = z2 > best_g;
        best_g = larger ? z2 : best_g;
        arg_g = larger ? Zero() + 2.0f : arg_g;
        larger = z3 > best_g;
        best_g = larger ? z3 : best_g;
        arg_g = larger ? Zero() + 3.0f : arg_g;
        Store(&best[g * kLanes], best_g);
        Store(&arg[g * kLanes], arg_g);
      }
      const int64_t at = (row * s.out_w + j) * s.filters;
      for (int64_t f = 0; f < s.filters; ++f) {
        const float value = best[f] + bias[f];
        pooled[at + f] = value > 0.0f ? value : 0.0f;
        which[at + f] = static_cast<uint8_t>(arg[f]);
      }
    }
  }
}

// Images [start, limit): the image gradient, and each image's kernel and
// bias gradients into its own rows of `partial` ([filters][tap_stride] of
// kernel gradient, taps contiguous, then [filters] of bias gradient).
// `kernel_t` is the kernel as [filters][tap_stride]. Each pooled value
// with the ReLU on sends its gradient to one of its window's four
// positions, a different one per filter: per filter, its kernel gradient
// takes that position's taps times the gradient, and that position's taps
// of the image gradient take the filter's kernel times the gradient (summed
// over the filters per position first, 8 taps at a time).
CRAM_CONV_CLONES
void BackwardImages(const Sizes& s, const float* images,
                    const float* kernel_t, int64_t tap_stride,
                    const float* pooled, const uint8_t* which,
                    const float* upstream, float* grad_images, float* partial,
                    int64_t start, int64_t limit) {
  const int64_t taps = s.Taps(), filters = s.filters;
  const int64_t vectors = tap_stride / kLanes;
  const std::vector<int64_t> offsets = TapOffsets(s);
  const int64_t* tap = offsets.data();
  // Per window position: its taps' input values, and the image gradient
  // its taps take (summed over the filters).
  std::vector<float> x_taps(static_cast<size_t>(4 * tap_stride), 0.0f);
  std::vector<float> g_taps(static_cast<size_t>(4 * tap_stride));
  const int64_t part_size = filters * tap_stride + filters;
  for (int64_t b = start; b < limit; ++b) {
    const float* image = images + b * s.height * s.width;
    float* grad_image = grad_images + b * s.height * s.width;
    std::memset(grad_image, 0, sizeof(float) * s.height * s.width);
    float* grad_kernel = partial + b * part_size;
    float* grad_bias = grad_kernel + filters * tap_stride;
    std::memset(grad_kernel, 0, sizeof(float) * part_size);
    for (int64_t i = 0; i < s.out_h; ++i) {
      for (int64_t j = 0; j < s.out_w; ++j) {
        const int64_t at = ((b * s.out_h + i) * s.out_w + j) * filters;
        int64_t corner[4];
        for (int q = 0; q < 4; ++q) {
          corner[q] = (2 * i + (q >> 1)) * s.width + 2 * j + (q & 1);
          for (int64_t t = 0; t < taps; ++t) {
            x_taps[q * tap_stride + t] = image[corner[q] + tap[t]];
          }
        }
        std::fill(g_taps.begin(), g_taps.end(), 0.0f);
        unsigned live = 0;
        for (int64_t f = 0; f < filters; ++f) {
          if (!(pooled[at + f] > 0.0f)) continue;  // the ReLU is off
          const int q = which[at + f];
          const float g = upstream[at + f];
          live |= 1u << q;
          grad_bias[f] += g;
          const float* x_q = &x_taps[q * tap_stride];
          float* g_q = &g_taps[q * tap_stride];
          float* gk = grad_kernel + f * tap_stride;
          const float* k = kernel_t + f * tap_stride;
          for (int64_t v = 0; v < vectors; ++v) {
            Store(gk + v * kLanes, Load(gk + v * kLanes) + g * Load(x_q + v * kLanes));
            Store(g_q + v * kLanes, Load(g_q + v * kLanes) + g * Load(k + v * kLanes));
          }
        }
        for (int q = 0; q < 4; ++q) {
          if (!(live & (1u << q))) continue;
          float* grad_corner = grad_image + corner[q];
          const float* g_q = &g_taps[q * tap_stride];
          for (int64_t t = 0; t < taps; ++t) grad_corner[tap[t]] += g_q[t];
        }
      }
    }
  }
}

absl::Status CheckShapes(const Tensor& images, const Tensor& kernel,
                         const Tensor& bias, Sizes* s) {
  if (bias.dims() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bias must be (filters,), got shape ", bias.shape().DebugString()));
  }
  const int64_t filters = bias.dim_size(0);
  if (images.dims() != 4 || images.dim_size(3) != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "images must be (batch, height, width, 1), got shape ",
        images.shape().DebugString()));
  }
  if (kernel.dims() != 4 || kernel.dim_size(2) != 1 || kernel.dim_size(0) < 1 ||
      kernel.dim_size(1) < 1 || kernel.dim_size(3) != filters) {
    return absl::InvalidArgumentError(absl::StrCat(
        "kernel must be (height, width, 1, filters) with the bias' ", filters,
        " filters, got shape ", kernel.shape().DebugString()));
  }
  s->batch = images.dim_size(0);
  s->height = images.dim_size(1);
  s->width = images.dim_size(2);
  s->kh = kernel.dim_size(0);
  s->kw = kernel.dim_size(1);
  s->filters = filters;
  s->out_h = std::max<int64_t>(0, (s->height - s->kh + 1) / 2);
  s->out_w = std::max<int64_t>(0, (s->width - s->kw + 1) / 2);
  s->groups = (filters + kLanes - 1) / kLanes;
  if (filters > 256 * kLanes) {
    return absl::InvalidArgumentError(
        absl::StrCat("at most ", 256 * kLanes, " filters, got ", filters));
  }
  return absl::OkStatus();
}

using Workers = tensorflow::DeviceBase::CpuWorkerThreads;

class ConvReluPoolOp : public OpKernel {
 public:
  using OpKernel::OpKernel;

  void Compute(OpKernelContext* context) override {
    const Tensor& images = context->input(0);
    const Tensor& kernel = context->input(1);
    const Tensor& bias = context->input(2);
    Sizes s;
    OP_REQUIRES_OK(context, CheckShapes(images, kernel, bias, &s));
    const TensorShape shape({s.batch, s.out_h, s.out_w, s.filters});
    Tensor *pooled = nullptr, *which = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, shape, &pooled));
    OP_REQUIRES_OK(context, context->allocate_output(1, shape, &which));
    if (shape.num_elements() == 0) return;
    const std::vector<float> padded = PadKernel(kernel.flat<float>().data(), s);
    const float* image_data = images.flat<float>().data();
    const float* bias_data = bias.flat<float>().data();
    float* out = pooled->flat<float>().data();
    uint8_t* arg = which->flat<uint8_t>().data();
    const Workers& workers = *context->device()->tensorflow_cpu_worker_threads();
    tensorflow::Shard(workers.num_threads, workers.workers, s.batch * s.out_h,
                      /*cost_per_unit=*/s.out_w * 8 * s.Taps() * s.groups * 8,
                      [&](int64_t start, int64_t limit) {
                        ForwardRows(s, image_data, padded.data(), bias_data,
                                    out, arg, start, limit);
                      });
  }
};

class ConvReluPoolGradOp : public OpKernel {
 public:
  using OpKernel::OpKernel;

  void Compute(OpKernelContext* context) override {
    const Tensor& images = context->input(0);
    const Tensor& kernel = context->input(1);
    const Tensor& bias = context->input(2);
    const Tensor& pooled = context->input(3);
    const Tensor& which = context->input(4);
    const Tensor& upstream = context->input(5);
    Sizes s;
    OP_REQUIRES_OK(context, CheckShapes(images, kernel, bias, &s));
    const TensorShape shape({s.batch, s.out_h, s.out_w, s.filters});
    for (const Tensor* t : {&pooled, &which, &upstream}) {
      OP_REQUIRES(context, t->shape() == shape,
                  absl::InvalidArgumentError(absl::StrCat(
                      "pooled, which and upstream must have the pooled shape ",
                      shape.DebugString(), ", got ", t->shape().DebugString())));
    }
    Tensor *grad_images = nullptr, *grad_kernel = nullptr, *grad_bias = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, images.shape(), &grad_images));
    OP_REQUIRES_OK(context, context->allocate_output(1, kernel.shape(), &grad_kernel));
    OP_REQUIRES_OK(context,
                   context->allocate_output(2, TensorShape({s.filters}), &grad_bias));
    const int64_t taps = s.Taps();
    const int64_t tap_stride = (taps + kLanes - 1) / kLanes * kLanes;
    const int64_t part_size = s.filters * tap_stride + s.filters;
    Tensor partial;
    OP_REQUIRES_OK(context, context->allocate_temp(
                                tensorflow::DT_FLOAT,
                                TensorShape({s.batch, part_size}), &partial));
    // The kernel as [filter][tap], taps padded with zeros.
    std::vector<float> kernel_t(static_cast<size_t>(s.filters * tap_stride), 0.0f);
    const float* kernel_data = kernel.flat<float>().data();
    for (int64_t t = 0; t < taps; ++t) {
      for (int64_t f = 0; f < s.filters; ++f) {
        kernel_t[f * tap_stride + t] = kernel_data[t * s.filters + f];
      }
    }
    const float* image_data = images.flat<float>().data();
    const float* pooled_data = pooled.flat<float>().data();
    const uint8_t* which_data = which.flat<uint8_t>().data();
    const float* up_data = upstream.flat<float>().data();
    float* gi = grad_images->flat<float>().data();
    float* parts = partial.flat<float>().data();
    const Workers& workers = *context->device()->tensorflow_cpu_worker_threads();
    tensorflow::Shard(
        workers.num_threads, workers.workers, s.batch,
        /*cost_per_unit=*/s.out_h * s.out_w * (8 * taps + 6 * s.filters * tap_stride / kLanes),
        [&](int64_t start, int64_t limit) {
          BackwardImages(s, image_data, kernel_t.data(), tap_stride, pooled_data,
                         which_data, up_data, gi, parts, start, limit);
        });
    // The images' sums in image order.
    float* gk = grad_kernel->flat<float>().data();
    float* gb = grad_bias->flat<float>().data();
    std::fill(gk, gk + taps * s.filters, 0.0f);
    std::fill(gb, gb + s.filters, 0.0f);
    for (int64_t b = 0; b < s.batch; ++b) {
      const float* part = parts + b * part_size;
      for (int64_t f = 0; f < s.filters; ++f) {
        for (int64_t t = 0; t < taps; ++t) gk[t * s.filters + f] += part[f * tap_stride + t];
        gb[f] += part[s.filters * tap_stride + f];
      }
    }
  }
};

}  // namespace

REGISTER_KERNEL_BUILDER(Name("CramConvReluPool").Device(tensorflow::DEVICE_CPU),
                        ConvReluPoolOp);
REGISTER_KERNEL_BUILDER(Name("CramConvReluPoolGrad").Device(tensorflow::DEVICE_CPU),
                        ConvReluPoolGradOp);
