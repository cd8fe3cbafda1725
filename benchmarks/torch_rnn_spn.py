"""RNN-SPN, FFN-SPN and the CNN of Table 1 in PyTorch, for timing only
(`benchmarks/train_speed.py`): the same layers, sizes and training recipe as
`cram_keras.models.rnn_spn` (NHWC there, NCHW here), written from the paper
and the released code, not from our Keras code.

- localisation: maxpool 2 -> conv 20@3x3 ReLU -> maxpool 2 -> conv 20 ->
  maxpool 2 -> conv 20 -> flatten;
- RNN-SPN: a GRU(256) fed the same features at each of 3 steps, Dense(6)
  from the identity, `affine_grid` + `grid_sample` (bilinear, zeros,
  align_corners=False) to 50x50 crops (d = 2), one classifier shared over
  the steps;
- FFN-SPN: Dense(200) ReLU and Dense(6) from the identity on the
  localisation features, one 50x50 crop, the classifier with 96 filters and
  three Dense(10) heads (one Dense(30));
- CNN: the FFN-SPN classifier on the full image;
- classifier: conv F@3x3 ReLU -> maxpool 2 -> conv F -> maxpool 2 ->
  conv F -> flatten -> Dense(400) ReLU, F = 32 (RNN-SPN) or 96;
- RMSprop(5e-4, alpha 0.9, eps 1e-6), gradients clipped to +-1 and then to
  global norm 5.
"""

import torch
from torch import nn
from torch.nn import functional as F

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def localization(channels=1, filters=20):
    return nn.Sequential(
        nn.MaxPool2d(2),
        nn.Conv2d(channels, filters, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(filters, filters, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(filters, filters, 3),
        nn.ReLU(),
        nn.Flatten(),
    )


def classifier(size, channels=1, filters=32, dense=400):
    # Valid 3x3 convolutions and 2x2 pooling: the flattened size.
    s = ((size - 2) // 2 - 2) // 2 - 2
    return nn.Sequential(
        nn.Conv2d(channels, filters, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(filters, filters, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(filters, filters, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(filters * s * s, dense),
        nn.ReLU(),
    )


def _localisation_features(size):
    s = size // 2 - 2
    s = s // 2 - 2
    s = s // 2 - 2
    return 20 * s * s


def identity_head(features):
    head = nn.Linear(features, 6)
    nn.init.zeros_(head.weight)
    with torch.no_grad():
        head.bias.copy_(torch.tensor(IDENTITY))
    return head


class RNNSPN(nn.Module):
    def __init__(self, size=100, steps=3, crop=50, units=256):
        super().__init__()
        self.steps, self.crop = steps, crop
        self.localization = localization()
        self.rnn = nn.GRU(_localisation_features(size), units, batch_first=True)
        self.head = identity_head(units)
        self.classifier = classifier(crop)
        self.logits = nn.Linear(400, 10)

    def forward(self, images):
        batch = images.shape[0]
        features = self.localization(images)
        repeated = features.unsqueeze(1).expand(-1, self.steps, -1)
        theta = self.head(self.rnn(repeated)[0]).reshape(-1, 2, 3)
        tiled = images.repeat_interleave(self.steps, dim=0)
        grid = F.affine_grid(
            theta, (batch * self.steps, 1, self.crop, self.crop), align_corners=False
        )
        crops = F.grid_sample(tiled, grid, align_corners=False)
        return self.logits(self.classifier(crops)).reshape(batch, self.steps, 10)


class FFNSPN(nn.Module):
    def __init__(self, size=100, steps=3, crop=50):
        super().__init__()
        self.steps, self.crop = steps, crop
        self.localization = localization()
        self.dense = nn.Linear(_localisation_features(size), 200)
        self.head = identity_head(200)
        self.classifier = classifier(crop, filters=96)
        self.heads = nn.Linear(400, 10 * steps)

    def forward(self, images):
        batch = images.shape[0]
        hidden = F.relu(self.dense(self.localization(images)))
        theta = self.head(hidden).reshape(-1, 2, 3)
        grid = F.affine_grid(
            theta, (batch, 1, self.crop, self.crop), align_corners=False
        )
        crops = F.grid_sample(images, grid, align_corners=False)
        return self.heads(self.classifier(crops)).reshape(batch, self.steps, 10)


class ConvNet(nn.Module):
    def __init__(self, size=100, steps=3):
        super().__init__()
        self.steps = steps
        self.classifier = classifier(size, filters=96)
        self.heads = nn.Linear(400, 10 * steps)

    def forward(self, images):
        return self.heads(self.classifier(images)).reshape(-1, self.steps, 10)


MODELS = {"rnn_spn": RNNSPN, "ffn_spn": FFNSPN, "conv": ConvNet}


def train_step_fn(model, clip_value=1.0, clip_norm=5.0, learning_rate=5e-4):
    """One training step `step(images, labels) -> loss` with the paper's
    optimiser and two-stage clipping."""
    optimizer = torch.optim.RMSprop(
        model.parameters(), lr=learning_rate, alpha=0.9, eps=1e-6
    )
    parameters = list(model.parameters())

    def step(images, labels):
        optimizer.zero_grad(set_to_none=True)
        logits = model(images)
        loss = F.cross_entropy(logits.reshape(-1, 10), labels.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_value_(parameters, clip_value)
        torch.nn.utils.clip_grad_norm_(parameters, clip_norm)
        optimizer.step()
        return loss

    return step
