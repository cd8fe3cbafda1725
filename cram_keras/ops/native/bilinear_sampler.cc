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
// x and y are (B, h, w), or broadcast to it along the output rows or columns:
// (B, 1, w) and (B, h, 1) for an axis-aligned map, where x depends on the
// column only and y on the row only. Their gradients have their own shapes.
//
// The forward pass is split over output rows, the backward pass over images
// (each image's gradient is written by one thread only: no atomics).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

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

class SampleCommon : public OpKernel {
 public:
  explicit SampleCommon(OpKernelConstruction* context) : OpKernel(context) {
    std::string padding;
    OP_REQUIRES_OK(context, context->GetAttr("padding", &padding));
    zeros_ = padding == "zeros";
  }

 protected:
  // Sizes of one call, and the strides that broadcast x and y.
  struct Geometry {
    int64_t batch, height, width, channels, out_h, out_w;
    int64_t x_size, x_row, x_col;  // per image; steps per output row, column
    int64_t y_size, y_row, y_col;
  };

  // Checks images (B, H, W, C) and x, y (B, h, w) or broadcast to it.
  static absl::Status CheckInputs(const Tensor& images, const Tensor& x,
                                  const Tensor& y, Geometry* g) {
    if (images.dims() != 4) {
      return absl::InvalidArgumentError(absl::StrCat(
          "images must be (batch, height, width, channels), got shape ",
          images.shape().DebugString()));
    }
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
    g->batch = images.dim_size(0);
    g->height = images.dim_size(1);
    g->width = images.dim_size(2);
    g->channels = images.dim_size(3);
    g->out_h = std::max(x.dim_size(1), y.dim_size(1));
    g->out_w = std::max(x.dim_size(2), y.dim_size(2));
    if (x.dim_size(1) == 0 || y.dim_size(1) == 0) g->out_h = 0;
    if (x.dim_size(2) == 0 || y.dim_size(2) == 0) g->out_w = 0;
    g->x_size = x.dim_size(1) * x.dim_size(2);
    g->x_row = x.dim_size(1) == 1 ? 0 : x.dim_size(2);
    g->x_col = x.dim_size(2) == 1 ? 0 : 1;
    g->y_size = y.dim_size(1) * y.dim_size(2);
    g->y_row = y.dim_size(1) == 1 ? 0 : y.dim_size(2);
    g->y_col = y.dim_size(2) == 1 ? 0 : 1;
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
    const int64_t batch = g.batch, height = g.height, width = g.width,
                  channels = g.channels, out_h = g.out_h, out_w = g.out_w;
    Tensor* output = nullptr;
    OP_REQUIRES_OK(context,
                   context->allocate_output(
                       0, TensorShape({batch, out_h, out_w, channels}), &output));
    const float* image_data = images.flat<float>().data();
    const float* x_data = x.flat<float>().data();
    const float* y_data = y.flat<float>().data();
    float* out = output->flat<float>().data();
    const bool zeros = zeros_;
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
            const float v00 = k.in00 ? image[k.r0 + c] : 0.0f;
            const float v01 = k.in01 ? image[k.r0 + channels + c] : 0.0f;
            const float v10 = k.in10 ? image[k.r1 + c] : 0.0f;
            const float v11 = k.in11 ? image[k.r1 + channels + c] : 0.0f;
            const float top = v00 + k.fx * (v01 - v00);
            const float dy = (v10 + k.fx * (v11 - v10)) - top;
            o[c] = top + k.fy * dy;
          }
        }
      }
    };
    auto* workers = context->device()->tensorflow_cpu_worker_threads();
    tensorflow::Shard(workers->num_threads, workers->workers, batch * out_h,
                      /*cost_per_unit=*/out_w * (20 + 12 * channels), rows);
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
    const int64_t batch = g.batch, height = g.height, width = g.width,
                  channels = g.channels, out_h = g.out_h, out_w = g.out_w;
    OP_REQUIRES(context,
                upstream.shape() == TensorShape({batch, out_h, out_w, channels}),
                absl::InvalidArgumentError(absl::StrCat(
                    "upstream must have the output's shape ",
                    TensorShape({batch, out_h, out_w, channels}).DebugString(),
                    ", got ", upstream.shape().DebugString())));
    Tensor *grad_images = nullptr, *grad_x = nullptr, *grad_y = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, images.shape(), &grad_images));
    OP_REQUIRES_OK(context, context->allocate_output(1, x.shape(), &grad_x));
    OP_REQUIRES_OK(context, context->allocate_output(2, y.shape(), &grad_y));
    const float* image_data = images.flat<float>().data();
    const float* x_data = x.flat<float>().data();
    const float* y_data = y.flat<float>().data();
    const float* up_data = upstream.flat<float>().data();
    float* gi_data = grad_images->flat<float>().data();
    float* gx_data = grad_x->flat<float>().data();
    float* gy_data = grad_y->flat<float>().data();
    const bool zeros = zeros_;
    const int64_t image_size = height * width * channels;
    const int64_t pixels = out_h * out_w;
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
            const float v00 = k.in00 ? image[k.r0 + c] : 0.0f;
            const float v01 = k.in01 ? image[k.r0 + channels + c] : 0.0f;
            const float v10 = k.in10 ? image[k.r1 + c] : 0.0f;
            const float v11 = k.in11 ? image[k.r1 + channels + c] : 0.0f;
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
    auto* workers = context->device()->tensorflow_cpu_worker_threads();
    tensorflow::Shard(workers->num_threads, workers->workers, batch,
                      /*cost_per_unit=*/pixels * (40 + 30 * channels) + image_size,
                      images_range);
  }
};

}  // namespace

REGISTER_KERNEL_BUILDER(Name("CramSampleAtPixels").Device(tensorflow::DEVICE_CPU),
                        SampleOp);
REGISTER_KERNEL_BUILDER(Name("CramSampleAtPixelsGrad").Device(tensorflow::DEVICE_CPU),
                        SampleGradOp);
