"""AnomSeg3D: a 3D U-Net that segments anomalies, trained on healthy scans only.

Self-supervised as the MOOD 2022 winners and DISYRE are: every training step
inserts synthetic anomalies into the healthy scans of the batch
(`uadcore.synth.anomalies`: blobs and irregular multi-focal regions of 2-60 mm,
brighter, darker, foreign tissue, blurred, ringed, speckled, some with mass
effect, some subtle) and the network learns to output their masks. It never sees
a real lesion; what it learns is "tissue that does not belong where it is", which
reconstruction models only approximate by failing to reconstruct it.

Its map (``probability``) is the predicted anomaly probability of each voxel of the
clean scan, calibrated on the healthy validation scans like every map. The loss
of a sample is the binary cross-entropy over its voxels plus the soft Dice of its
anomalies (0 for an image left clean); each region's target is as strong as it
changed its tissue (`visible_change`), so a change too faint to see is not a full
"anomaly" to find; outside training the anomalies are drawn
from a fixed seed, so the validation loss of different epochs compares the same
task.

The network is MONAI's `UNet` (residual units, instance norm: a scan's output
never depends on which scans share its batch). The input is zero-padded to a
multiple of 2**depth and the output cropped back, as in `AE3D`.

Shapes: x (B, 1, I, J, K) -> logits, probability (B, 1, I, J, K).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from uadcore.models.blocks import crop_to, pad_to, padded_shape
from uadcore.models.spec import ModelSpec
from uadcore.synth.anomalies import VISIBLE_CHANGE, AnomalySettings, insert_anomalies

PRIOR = 0.01  # the anomalous share of voxels the network starts from
VALIDATION_SEED = 20260  # the anomalies of the validation loss: the same every epoch


class AnomSeg3D(nn.Module):
    def __init__(self, in_shape=(64, 77, 66), channels=(16, 32, 64, 128, 256), res_units=2, in_channels=1,
                 voxel_mm=2.5, clean_share=0.1, visible_change=VISIBLE_CHANGE):
        super().__init__()
        self.in_shape = tuple(int(n) for n in in_shape)
        self.padded_shape = padded_shape(self.in_shape, len(channels) - 1)
        # MONAI's UNet ends in its out_channels: asked for one, its last up-sampling
        # would squeeze every feature through one normalised channel; it gives
        # channels[0] features here, and a 1x1x1 convolution the logit
        from monai.networks.nets import UNet  # MONAI where a network is built: `uad --help` need not load it

        self.net = nn.Sequential(
            UNet(3, in_channels, channels[0], channels=tuple(channels), strides=(2,) * (len(channels) - 1),
                 num_res_units=res_units, norm="instance", act=("leakyrelu", {"negative_slope": 0.1})),
            nn.LeakyReLU(0.1), nn.Conv3d(channels[0], 1, kernel_size=1))
        self.anomalies = AnomalySettings(voxel_mm=float(voxel_mm), clean_share=float(clean_share),
                                         visible_change=float(visible_change))
        # start from "almost nothing is anomalous" (as the data are): the first steps
        # then learn where anomalies are, not to lower a probability of 0.5 everywhere
        nn.init.constant_(self.net[-1].bias, math.log(PRIOR / (1 - PRIOR)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Anomaly logits, (B, 1, I, J, K)."""
        return crop_to(self.net(pad_to(x, self.padded_shape)), self.in_shape)

    def anomaly_probability(self, x: torch.Tensor) -> torch.Tensor:
        """P(anomalous) of every voxel of x, (B, 1, I, J, K) float32."""
        return torch.sigmoid(self(x).float())

    def loss_per_sample(self, x: torch.Tensor) -> torch.Tensor:
        """Cross-entropy plus soft Dice of the anomalies inserted into x, (B,)."""
        generator = None if self.training else torch.Generator().manual_seed(VALIDATION_SEED)
        altered, target = insert_anomalies(x, self.anomalies, generator)
        logits = self(altered.to(x.dtype)).float()
        cross_entropy = F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1).mean(1)
        probability, target = torch.sigmoid(logits).flatten(1), target.flatten(1)
        overlap, total = (probability * target).sum(1), probability.sum(1) + target.sum(1)
        has_anomaly = (target.sum(1) > 0).float()
        dice_loss = has_anomaly * (1.0 - (2.0 * overlap + 1.0) / (total + 1.0))
        return cross_entropy + dice_loss


SPEC = ModelSpec(
    "anomseg3d", AnomSeg3D, "brain3d-behrendt", maps=("probability",),
    summary="a 3D U-Net that segments synthetic anomalies inserted into healthy scans (self-supervised)",
    small={"channels": [8, 16, 32, 64], "res_units": 1},
    # its loss depends on the anomalies drawn that step (a clean image or a tiny
    # region), so the paper's rule "loss > gamma x mean" would remove scans by chance:
    # removal is off unless asked for; re-initialisation would only cost epochs
    # many small steps: on IXI, 600 steps of 2 scans found more of the BraTS tumours
    # than fewer, larger ones in the same time (benchmarks/RESULTS.md); a GPU takes --batch-size 8 or more
    train={"epochs": 30, "batch_size": 2, "lr": 2e-3, "reinit_at": [], "outlier_removal": False, "checkpoint_every": 5},
)
